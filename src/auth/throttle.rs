//! Login throttling kept in the database, so it holds across instances and restarts
//! (SPEC §5): 10 failures per email and 50 per client IP within an hour.

use crate::error::{Error, Result};
use crate::store::{LoginReservation, Store};

pub const WINDOW_SECS: i64 = 3600;
pub const PER_EMAIL: i64 = 10;
pub const PER_IP: i64 = 50;

/// The throttle bucket of an address (lower-cased, as accounts are stored).
pub fn email_bucket(address: &str) -> String {
    format!("email:{}", address.to_lowercase())
}

pub fn ip_bucket(ip: &str) -> String {
    format!("ip:{ip}")
}

/// Reserves this attempt in every bucket: a failure is recorded before the password is
/// checked, in the same transaction that counts the bucket, so attempts sent side by side
/// cannot all pass the check. A wrong password keeps the reservation as its failure; a
/// right one removes it ([`Store::forget_login_failures`]). Returns the reserved ids.
///
/// `Err(TooManyAttempts)`, with nothing recorded, when any bucket has reached its limit
/// within the window; the `Retry-After` is when its oldest counted failure leaves it.
pub async fn reserve(store: &Store, buckets: &[(String, i64)], now: i64) -> Result<Vec<i64>> {
    match store
        .reserve_login_attempt(buckets, now - WINDOW_SECS, now)
        .await?
    {
        LoginReservation::Reserved(ids) => Ok(ids),
        LoginReservation::Full { oldest } => Err(Error::TooManyAttempts {
            retry_after_secs: retry_after(oldest, now),
        }),
    }
}

/// Seconds until a failure recorded at `oldest` leaves the window (at least 1).
fn retry_after(oldest: i64, now: i64) -> u64 {
    (oldest + WINDOW_SECS - now).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_when_the_oldest_failure_leaves_the_window() {
        assert_eq!(retry_after(1_000, 1_000), 3600);
        assert_eq!(retry_after(1_000, 1_000 + 3599), 1);
        // At the window's edge (or past it, with a clock step) still at least a second.
        assert_eq!(retry_after(1_000, 1_000 + 3600), 1);
        assert_eq!(retry_after(1_000, 1_000 + 7200), 1);
    }
}
