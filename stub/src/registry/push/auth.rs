//! Credentials and auth challenges: `--user`/`--password-stdin` or the docker config's
//! `auths`, and the `WWW-Authenticate` challenges of registries (Basic, or Bearer with a
//! token realm as distribution, Harbor and Docker Hub use).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::PushError;

/// A user name and password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// The password (or token).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic` header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The docker config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The credentials for `host` (`host[:port]`) in the docker config at `path`, if any.
/// A missing file is no credentials; an unreadable or malformed one is an error.
pub fn from_docker_config(path: &Path, host: &str) -> Result<Option<Credentials>, PushError> {
    let err = |source| PushError::Credentials {
        from: path.display().to_string(),
        source,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        auths: BTreeMap<String, Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    let config: Config = serde_json::from_str(&text)
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    // Keys are `host`, `host:port`, or URLs such as `https://host/v1/`.
    let key_host = |k: &str| {
        let k = k
            .strip_prefix("https://")
            .or_else(|| k.strip_prefix("http://"))
            .unwrap_or(k);
        k.split('/').next().unwrap_or(k).to_owned()
    };
    let Some(entry) = config
        .auths
        .iter()
        .find(|(k, _)| key_host(k) == host)
        .map(|(_, e)| e)
    else {
        return Ok(None);
    };
    if let Some(auth) = &entry.auth {
        let bad = || {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the auth of {host} is not base64 of user:password"),
            ))
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (user, password) = raw.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            user: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

/// One `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...`.
    Basic,
    /// `Bearer realm=...,service=...,scope=...`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// `service`, passed back to the realm.
        service: Option<String>,
        /// `scope`, passed back to the realm.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` value (one challenge; quoted or bare parameters).
    pub fn parse(value: &str) -> Option<Challenge> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let params = parse_params(rest);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => Some(Challenge::Bearer {
                realm: params.get("realm")?.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            }),
            _ => None,
        }
    }
}

/// `key="value", key2=value2` (quotes may hold commas and `\"` escapes).
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_give_realm_service_and_scope() {
        let c = Challenge::parse(
            r#"Bearer realm="https://harbor.site/service/token",service="harbor-registry",scope="repository:mirror/app:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://harbor.site/service/token".into(),
                service: Some("harbor-registry".into()),
                scope: Some("repository:mirror/app:pull,push".into()),
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn docker_config_auths_match_host_and_url_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"https://harbor.site/v1/":{{"auth":"{auth}"}},"other:5000":{{"username":"bob","password":"pw"}}}}}}"#
            ),
        )
        .unwrap();
        let c = from_docker_config(&path, "harbor.site").unwrap().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("alice", "s3cr:et"));
        let c = from_docker_config(&path, "other:5000").unwrap().unwrap();
        assert_eq!(c.user, "bob");
        assert_eq!(from_docker_config(&path, "nowhere").unwrap(), None);
        assert_eq!(
            from_docker_config(&dir.path().join("missing.json"), "x").unwrap(),
            None
        );
        assert!(!format!("{c:?}").contains("pw"));
    }
}
