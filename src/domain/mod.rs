//! Pure types and rules, parsed at the boundary: emails, redirect targets, group mappings.

pub mod email;
pub mod group_mappings;
pub mod return_to;
