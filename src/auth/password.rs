//! Argon2id password hashing on blocking threads, with a bound on how many run at once
//! (each takes 19 MiB) and a dummy hash so unknown emails cost the same time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Argon2 computations started (hashes and verifications, not the dummy hash's own).
    computed: Arc<AtomicU64>,
}

impl Default for Passwords {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Passwords {
            permits: Arc::new(Semaphore::new(cores.max(1))),
            computed: Arc::new(AtomicU64::new(0)),
        }
    }
}

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A password a person chose: at least 8 characters, at most 1 KiB. The error's message
/// says which of the two limits was missed.
pub fn check_new_password(password: &str) -> Result<()> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::validation(
            "password",
            "The password must be at most 1024 bytes long.",
        ));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::validation(
            "password",
            "The password must have at least 8 characters.",
        ));
    }
    Ok(())
}

pub fn hash_blocking(password: &str) -> Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(anyhow::anyhow!("hashing failed: {e}")))
}

fn verify_blocking(password: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_blocking("latchkey dummy password for timing equality").unwrap_or_default()
    })
}

impl Passwords {
    /// How many argon2 computations this instance has started: the costly work a request
    /// can make the server do (tests check that refused requests cause none).
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    pub async fn hash(&self, password: String) -> Result<String> {
        let _permit = self.permits.acquire().await.map_err(Error::internal)?;
        self.computed.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(Error::internal)?
    }

    /// Verifies against `phc`, or against a dummy hash when there is none (unknown user,
    /// SSO-only user) so that the answer takes the same time; then returns false.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool> {
        let _permit = self.permits.acquire().await.map_err(Error::internal)?;
        self.computed.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || match phc {
            Some(h) => verify_blocking(&password, &h),
            None => {
                let _ = verify_blocking(&password, dummy_hash());
                false
            }
        })
        .await
        .map_err(Error::internal)
    }

    /// Computes the dummy hash ahead of the first login.
    pub fn warm_up() {
        std::thread::spawn(|| {
            let _ = dummy_hash();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_password_is_refused_with_the_limit_it_missed() {
        let message = |pw: &str| check_new_password(pw).unwrap_err().to_string();
        assert_eq!(
            message("seven77"),
            "The password must have at least 8 characters."
        );
        // Characters, not bytes: four two-byte letters are still too short.
        assert_eq!(
            message("üüüü"),
            "The password must have at least 8 characters."
        );
        assert_eq!(
            message(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
            "The password must be at most 1024 bytes long."
        );
        // 600 two-byte letters: enough characters, too many bytes.
        assert_eq!(
            message(&"ü".repeat(600)),
            "The password must be at most 1024 bytes long."
        );
        assert!(check_new_password("eight888").is_ok());
        assert!(check_new_password(&"x".repeat(MAX_PASSWORD_BYTES)).is_ok());
    }
}
