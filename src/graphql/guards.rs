//! The one role check and the per-caller rate limit, as async-graphql guards. Resolvers only
//! declare what they need (`guard = "OperatorAction"`).

use async_graphql::{Context, ErrorExtensions, Guard, Result};
use catalog_api::ErrorCode;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::caller;
use crate::auth::Role;

pub const FORBIDDEN: &str = ErrorCode::Forbidden.as_str();
pub const UNAUTHENTICATED: &str = ErrorCode::Unauthenticated.as_str();
pub const RATE_LIMITED: &str = ErrorCode::RateLimited.as_str();

/// Requires at least `role`.
pub struct RequireRole(pub Role);

impl Guard for RequireRole {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        let c = caller(ctx)?;
        if c.role < self.0 {
            let msg = format!("`{}` has the {} role; this needs the {} role", c.name, c.role.as_str(), self.0.as_str());
            return Err(async_graphql::Error::new(msg).extend_with(|_, e| e.set("code", FORBIDDEN)));
        }
        Ok(())
    }
}

/// Operator role plus the per-caller rate limit on changes (apply, refresh, rollback).
pub struct OperatorAction;

impl Guard for OperatorAction {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        let denied = RequireRole(Role::Operator).check(ctx).await;
        let result = match denied {
            Err(e) => Err(e),
            Ok(()) => match ctx.data_opt::<RateLimiter>() {
                Some(limiter) => limiter.check(&caller(ctx)?.name).map_err(|retry| {
                    let secs = retry.as_secs_f64().ceil().max(1.0) as u64;
                    async_graphql::Error::new(format!("too many changes; retry in {secs} s")).extend_with(
                        move |_, e| {
                            e.set("code", RATE_LIMITED);
                            e.set("retryAfter", secs);
                        },
                    )
                }),
                None => Ok(()),
            },
        };
        if let Err(e) = &result {
            super::audit::record_denied(ctx, e).await;
        }
        result
    }
}

/// Token bucket per caller: `per_minute` changes a minute, bursts up to the same number.
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter { per_minute, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token, or says how long until one is available.
    pub fn check(&self, who: &str) -> std::result::Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let cap = f64::from(self.per_minute);
        let rate = cap / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets.entry(who.to_string()).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bucket_allows_a_burst_then_limits() {
        let l = super::RateLimiter::new(3);
        assert!(l.check("a").is_ok() && l.check("a").is_ok() && l.check("a").is_ok());
        let wait = l.check("a").unwrap_err();
        assert!(wait.as_secs_f64() > 10.0 && wait.as_secs_f64() <= 20.0, "{wait:?}");
        assert!(l.check("b").is_ok(), "buckets are per caller");
    }
}
