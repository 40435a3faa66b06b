//! Login throttling kept in the database, so it holds across instances and restarts
//! (SPEC §5): 10 failures per email and 50 per client IP within an hour.

use crate::error::{Error, Result};
use crate::store::Store;

pub const WINDOW_SECS: i64 = 3600;
pub const PER_EMAIL: i64 = 10;
pub const PER_IP: i64 = 50;

pub fn email_bucket(email: &str) -> String {
    format!("email:{}", email.to_lowercase())
}

pub fn ip_bucket(ip: &str) -> String {
    format!("ip:{ip}")
}

/// `Err(TooManyAttempts)` when any bucket has reached its limit within the window; the
/// `Retry-After` is when its oldest counted failure leaves the window.
pub async fn check(store: &Store, buckets: &[(String, i64)], now: i64) -> Result<()> {
    let mut retry_after = 0;
    for (bucket, limit) in buckets {
        let times = store
            .recent_login_failures(bucket, now - WINDOW_SECS, *limit)
            .await?;
        if times.len() as i64 >= *limit
            && let Some(oldest) = times.last()
        {
            retry_after = retry_after.max(oldest + WINDOW_SECS - now);
        }
    }
    if retry_after > 0 {
        return Err(Error::TooManyAttempts {
            retry_after_secs: retry_after.max(1) as u64,
        });
    }
    Ok(())
}
