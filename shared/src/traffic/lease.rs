//! The deployment lease: one deployment of a route at a time. The lease lives
//! in the provider itself (for Route53, a TXT record created with CREATE, which
//! fails when it exists) and carries an expiry, so a killed job cannot block
//! forever. Its value names the holder; it holds nothing secret.

use chrono::{DateTime, TimeZone, Utc};

/// What a step asks for when it takes a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// Who asks (user, host, CI job).
    pub holder: String,
    /// When the lease lapses if it is never released.
    pub expires: DateTime<Utc>,
}

/// A lease as stored at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// A random token unique to the run that took it.
    pub token: String,
    /// Who holds it.
    pub holder: String,
    /// When it lapses.
    pub expires: DateTime<Utc>,
}

impl Lease {
    /// A new lease for `request` with a fresh token.
    pub fn new(request: &LeaseRequest) -> Self {
        let token: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(16)
            .collect();
        Self {
            token,
            holder: request.holder.clone(),
            expires: request.expires,
        }
    }

    /// Whether it has lapsed at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires <= now
    }

    /// Its encoding in one DNS TXT string (without the quotes): no spaces,
    /// quotes, backslashes or semicolons inside fields.
    pub fn encode(&self) -> String {
        let holder: String = self
            .holder
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | ';') {
                    c
                } else {
                    '_'
                }
            })
            .take(120)
            .collect();
        format!(
            "switchyard-lease=1;token={};expires={};holder={holder}",
            self.token,
            self.expires.timestamp()
        )
    }

    /// Reads an encoded lease; `None` when it is not one of ours.
    pub fn decode(text: &str) -> Option<Self> {
        let text = text.trim().trim_matches('"');
        let mut token = None;
        let mut expires = None;
        let mut holder = None;
        let mut ours = false;
        for field in text.split(';') {
            match field.split_once('=') {
                Some(("switchyard-lease", "1")) => ours = true,
                Some(("token", v)) => token = Some(v.to_owned()),
                Some(("expires", v)) => {
                    expires = v
                        .parse::<i64>()
                        .ok()
                        .and_then(|t| Utc.timestamp_opt(t, 0).single());
                }
                Some(("holder", v)) => holder = Some(v.to_owned()),
                _ => {}
            }
        }
        if !ours {
            return None;
        }
        Some(Self {
            token: token?,
            holder: holder.unwrap_or_default(),
            expires: expires?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_sanitizes_the_holder() {
        let lease = Lease::new(&LeaseRequest {
            holder: "ci \"bot\";x@host (run 7)".into(),
            expires: Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
        });
        let text = lease.encode();
        assert!(!text.contains(' ') && !text.contains('"'), "{text}");
        let back = Lease::decode(&format!("\"{text}\"")).unwrap();
        assert_eq!(back.token, lease.token);
        assert_eq!(back.expires, lease.expires);
        assert_eq!(back.holder, "ci__bot__x@host_(run_7)");
        assert!(back.expired(Utc.timestamp_opt(1_800_000_000, 0).unwrap()));
        assert!(!back.expired(Utc.timestamp_opt(1_799_999_999, 0).unwrap()));
        assert_eq!(Lease::decode("\"v=spf1 -all\""), None);
    }
}
