//! Pure types and rules, parsed at the boundary: emails, names, redirect targets, group
//! mappings.

pub mod email;
pub mod group_mappings;
pub mod name;
pub mod return_to;
