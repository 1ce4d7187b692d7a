//! Keystone v3: a cloud from a standard `clouds.yaml`, tokens, and the service catalog.
//!
//! `clouds.yaml` is looked for where openstacksdk looks: the path given, `OS_CLIENT_CONFIG_FILE`,
//! `./clouds.yaml`, `~/.config/openstack/clouds.yaml`, `/etc/openstack/clouds.yaml`. Two ways to
//! authenticate: a password (`auth_type: password`, the default) scoped to a project, or an
//! application credential (`auth_type: v3applicationcredential`, by id, or by name with its
//! user). `secure.yaml` and `OS_*` environment overrides are not read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

/// How a cloud authenticates.
#[derive(Clone, PartialEq)]
pub enum AuthMethod {
    Password {
        username: String,
        password: String,
        user_domain: String,
        project_name: String,
        project_domain: String,
    },
    ApplicationCredential {
        /// The credential's id, or its name (then `username` and `user_domain` say whose).
        id: Option<String>,
        name: Option<String>,
        username: Option<String>,
        user_domain: String,
        secret: String,
    },
}

impl std::fmt::Debug for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthMethod::Password { username, project_name, .. } => {
                write!(f, "password(user {username:?}, project {project_name:?}, password hidden)")
            }
            AuthMethod::ApplicationCredential { id, name, .. } => {
                write!(f, "application credential({:?}, secret hidden)", id.as_ref().or(name.as_ref()))
            }
        }
    }
}

/// One cloud of a `clouds.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cloud {
    /// Its name in the file.
    pub name: String,
    /// Keystone's v3 URL (`/v3` appended when the file leaves it out).
    pub auth_url: String,
    pub auth: AuthMethod,
    pub region: Option<String>,
    /// Endpoint interface: `public` (default), `internal` or `admin`.
    pub interface: String,
}

#[derive(Deserialize)]
struct CloudsFile {
    clouds: BTreeMap<String, CloudEntry>,
}

#[derive(Deserialize)]
struct CloudEntry {
    #[serde(default)]
    auth: BTreeMap<String, serde_yaml_ng::Value>,
    auth_type: Option<String>,
    region_name: Option<String>,
    interface: Option<String>,
}

/// Where `clouds.yaml` is looked for, in order.
pub fn search_path(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("OS_CLIENT_CONFIG_FILE") {
        v.push(PathBuf::from(p));
    }
    v.push(PathBuf::from("clouds.yaml"));
    if let Some(h) = std::env::var_os("HOME") {
        v.push(Path::new(&h).join(".config/openstack/clouds.yaml"));
    }
    v.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    v
}

impl Cloud {
    /// Cloud `name` from the first `clouds.yaml` on the [`search_path`].
    pub fn load(file: Option<&Path>, name: &str) -> Result<Cloud, String> {
        let paths = search_path(file);
        let Some(path) = paths.iter().find(|p| p.is_file()) else {
            let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            return Err(format!("no clouds.yaml found (looked at {})", list.join(", ")));
        };
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Cloud::parse(&text, name).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Cloud `name` from the text of a `clouds.yaml`.
    pub fn parse(text: &str, name: &str) -> Result<Cloud, String> {
        let f: CloudsFile = serde_yaml_ng::from_str(text).map_err(|e| format!("not a clouds.yaml: {e}"))?;
        let Some(c) = f.clouds.get(name) else {
            let known: Vec<&str> = f.clouds.keys().map(String::as_str).collect();
            return Err(format!("no cloud {name:?} (clouds: {})", known.join(", ")));
        };
        let get = |k: &str| -> Option<String> {
            match c.auth.get(k)? {
                serde_yaml_ng::Value::String(s) => Some(s.clone()),
                serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let need = |k: &str| get(k).ok_or_else(|| format!("cloud {name:?}: auth.{k} is missing"));
        let domain = |k: &str, id: &str| get(k).or_else(|| get(id)).unwrap_or_else(|| "Default".into());
        let mut auth_url = need("auth_url")?.trim_end_matches('/').to_string();
        if !auth_url.ends_with("/v3") {
            auth_url.push_str("/v3");
        }
        let auth = match c.auth_type.as_deref().unwrap_or("password") {
            "password" | "v3password" => AuthMethod::Password {
                username: need("username")?,
                password: need("password")?,
                user_domain: domain("user_domain_name", "user_domain_id"),
                project_name: need("project_name")?,
                project_domain: domain("project_domain_name", "project_domain_id"),
            },
            "v3applicationcredential" | "application_credential" => {
                let id = get("application_credential_id");
                let name_ = get("application_credential_name");
                if id.is_none() && (name_.is_none() || get("username").is_none()) {
                    return Err(format!(
                        "cloud {name:?}: an application credential needs auth.application_credential_id, or \
                         auth.application_credential_name with auth.username"
                    ));
                }
                AuthMethod::ApplicationCredential {
                    id,
                    name: name_,
                    username: get("username"),
                    user_domain: domain("user_domain_name", "user_domain_id"),
                    secret: need("application_credential_secret")?,
                }
            }
            other => {
                return Err(format!(
                    "cloud {name:?}: auth_type {other:?} is not supported (password or v3applicationcredential)"
                ))
            }
        };
        let interface = c.interface.clone().unwrap_or_else(|| "public".into());
        if !["public", "internal", "admin"].contains(&interface.as_str()) {
            return Err(format!("cloud {name:?}: interface {interface:?}: public, internal or admin"));
        }
        Ok(Cloud { name: name.into(), auth_url, auth, region: c.region_name.clone(), interface })
    }

    /// The body of `POST /v3/auth/tokens`.
    fn auth_body(&self) -> Value {
        match &self.auth {
            AuthMethod::Password { username, password, user_domain, project_name, project_domain } => json!({
                "auth": {
                    "identity": {"methods": ["password"], "password": {"user": {
                        "name": username, "domain": domain_ref(user_domain), "password": password}}},
                    "scope": {"project": {"name": project_name, "domain": domain_ref(project_domain)}}
                }
            }),
            AuthMethod::ApplicationCredential { id, name, username, user_domain, secret } => {
                let cred = match (id, name) {
                    (Some(id), _) => json!({"id": id, "secret": secret}),
                    (None, n) => json!({"name": n, "secret": secret,
                        "user": {"name": username, "domain": domain_ref(user_domain)}}),
                };
                json!({"auth": {"identity": {"methods": ["application_credential"], "application_credential": cred}}})
            }
        }
    }
}

/// A domain given by name, or by id when it looks like one (32 hex digits).
fn domain_ref(d: &str) -> Value {
    if d.len() == 32 && d.bytes().all(|b| b.is_ascii_hexdigit()) {
        json!({"id": d})
    } else {
        json!({"name": d})
    }
}

/// A Keystone token and the endpoint it found for one service type.
#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub endpoint: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

/// Authenticates and finds `service_type`'s endpoint in the token's catalog.
pub fn authenticate(http: &ureq::Agent, cloud: &Cloud, service_type: &str) -> Result<Token, String> {
    let url = format!("{}/auth/tokens", cloud.auth_url);
    let mut resp = http
        .post(&url)
        .header("Content-Type", "application/json")
        .send_json(cloud.auth_body())
        .map_err(|e| format!("Keystone at {url}: {e}"))?;
    let status = resp.status().as_u16();
    let token = resp.headers().get("x-subject-token").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
    if status != 201 {
        let msg = body["error"]["message"].as_str().unwrap_or("no message");
        return Err(format!("Keystone refused cloud {:?}'s credentials ({status}): {msg}", cloud.name));
    }
    let value = token.ok_or("Keystone answered without X-Subject-Token")?;
    let endpoint = find_endpoint(&body["token"]["catalog"], service_type, &cloud.interface, cloud.region.as_deref())
        .ok_or_else(|| {
            format!(
                "no {} endpoint of service type {service_type:?}{} in cloud {:?}'s catalog",
                cloud.interface,
                cloud.region.as_deref().map(|r| format!(" in region {r:?}")).unwrap_or_default(),
                cloud.name
            )
        })?;
    Ok(Token { value, endpoint })
}

/// The URL of `service_type` for `interface` (and `region`, when given) in a v3 catalog.
pub fn find_endpoint(catalog: &Value, service_type: &str, interface: &str, region: Option<&str>) -> Option<String> {
    catalog.as_array()?.iter().filter(|s| s["type"] == service_type).find_map(|s| {
        s["endpoints"].as_array()?.iter().find_map(|e| {
            let region_ok = region.is_none_or(|r| e["region_id"] == r || e["region"] == r);
            (e["interface"] == interface && region_ok)
                .then(|| e["url"].as_str().map(|u| u.trim_end_matches('/').to_string()))
                .flatten()
        })
    })
}

/// An HTTP agent for OpenStack APIs: statuses are answers, not errors.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().new_agent()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
clouds:
  lab:
    auth:
      auth_url: http://10.0.0.1:5000
      username: admin
      password: s3cret
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
  app:
    auth_type: v3applicationcredential
    auth:
      auth_url: http://10.0.0.1:5000/v3/
      application_credential_id: abc
      application_credential_secret: xyz
    interface: internal
  broken:
    auth:
      auth_url: http://x
"#;

    #[test]
    fn clouds_yaml_password_and_application_credential() {
        let c = Cloud::parse(FILE, "lab").unwrap();
        assert_eq!(c.auth_url, "http://10.0.0.1:5000/v3");
        assert_eq!(c.region.as_deref(), Some("RegionOne"));
        assert_eq!(c.interface, "public");
        let body = c.auth_body();
        assert_eq!(body["auth"]["identity"]["password"]["user"]["password"], "s3cret");
        assert_eq!(body["auth"]["scope"]["project"]["name"], "admin");
        // The password never shows in a debug print.
        assert!(!format!("{c:?}").contains("s3cret"));
        let a = Cloud::parse(FILE, "app").unwrap();
        assert_eq!(a.auth_url, "http://10.0.0.1:5000/v3");
        assert_eq!(a.interface, "internal");
        let body = a.auth_body();
        assert_eq!(body["auth"]["identity"]["methods"][0], "application_credential");
        assert_eq!(body["auth"]["identity"]["application_credential"]["id"], "abc");
        assert!(body["auth"].get("scope").is_none());
        assert!(!format!("{a:?}").contains("xyz"));
    }

    #[test]
    fn clouds_yaml_errors_name_what_is_wrong() {
        assert!(Cloud::parse(FILE, "nope").unwrap_err().contains("clouds: app, broken, lab"));
        assert!(Cloud::parse(FILE, "broken").unwrap_err().contains("auth.username is missing"));
        assert!(Cloud::parse("clouds: [", "x").unwrap_err().contains("not a clouds.yaml"));
    }

    #[test]
    fn catalog_lookup_by_type_interface_and_region() {
        let cat = json!([
            {"type": "identity", "endpoints": [{"interface": "public", "region_id": "R1", "url": "http://k/v3"}]},
            {"type": "compute", "endpoints": [
                {"interface": "internal", "region_id": "R1", "url": "http://int:8774/v2.1"},
                {"interface": "public", "region_id": "R2", "url": "http://r2:8774/v2.1/"},
                {"interface": "public", "region_id": "R1", "url": "http://r1:8774/v2.1/"}]}
        ]);
        assert_eq!(find_endpoint(&cat, "compute", "public", Some("R1")).unwrap(), "http://r1:8774/v2.1");
        assert_eq!(find_endpoint(&cat, "compute", "internal", None).unwrap(), "http://int:8774/v2.1");
        assert!(find_endpoint(&cat, "compute", "admin", None).is_none());
        assert!(find_endpoint(&cat, "volumev3", "public", None).is_none());
    }
}
