//! A Nova (compute API v2.1) client: what consolidation needs, nothing more.
//!
//! - **Microversion**: the highest of the server's range up to [`WANTED_MICROVERSION`] (2.87:
//!   hypervisors still carry their vCPU and memory figures, which 2.88 removed; instance-action
//!   events carry `details`, the reason a migration failed, since 2.84). Below
//!   [`MIN_MICROVERSION`] (2.60, Queens) the client refuses to start.
//! - **Retries**: a transport error, or a 5xx / 429 answer, is retried with exponential back-off
//!   (`retry.attempts`, from `retry.base`); a GET always, a POST/PUT/DELETE only when the answer
//!   says nothing was done (503, 429, or a connection that was never made). A 401 re-authenticates
//!   once (the token expired). A 4xx is Nova's refusal: returned with Nova's message, never retried.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::keystone::{self, Cloud, Token};

/// The microversion asked for (capped by the server's maximum).
pub const WANTED_MICROVERSION: (u32, u32) = (2, 87);
/// Below this the client refuses the cloud.
pub const MIN_MICROVERSION: (u32, u32) = (2, 60);
/// Tokens are renewed after this long even without a 401 (Keystone's default lifetime is 1 h).
const TOKEN_RENEW: Duration = Duration::from_secs(45 * 60);

/// Why a Nova call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NovaError {
    /// Nova answered with a refusal (4xx): its own message.
    #[error("Nova refused ({status}): {message}")]
    Refused { status: u16, message: String },
    /// Nova or Keystone could not be reached, or kept failing (after the retries).
    #[error("{0}")]
    Unavailable(String),
    /// Keystone refused the credentials, or the catalog has no compute endpoint.
    #[error("{0}")]
    Auth(String),
    /// An answer that is not what the API documents.
    #[error("unexpected answer to {what}: {why}")]
    Protocol { what: String, why: String },
}

/// Back-off of transient failures.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Tries in all (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubles each time (capped at 8 s).
    pub base: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry { attempts: 5, base: Duration::from_millis(500) }
    }
}

struct Session {
    token: Token,
    microversion: String,
    at: Instant,
}

/// A Nova client for one cloud (thread-safe; one Keystone token shared by all calls).
pub struct Nova {
    cloud: Cloud,
    http: ureq::Agent,
    session: Mutex<Option<Session>>,
    pub retry: Retry,
}

impl std::fmt::Debug for Nova {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nova").field("cloud", &self.cloud.name).finish_non_exhaustive()
    }
}

/// A hypervisor (compute node) as Nova reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct Hypervisor {
    pub id: String,
    pub hypervisor_hostname: String,
    /// `up` or `down`.
    pub state: String,
    /// `enabled` or `disabled`.
    pub status: String,
    #[serde(default)]
    pub vcpus: u32,
    #[serde(default)]
    pub memory_mb: f64,
    pub service: HypervisorService,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HypervisorService {
    pub host: String,
    pub id: String,
    pub disabled_reason: Option<String>,
}

/// A `nova-compute` service.
#[derive(Debug, Clone, Deserialize)]
pub struct Service {
    pub id: String,
    pub host: String,
    pub status: String,
    pub state: String,
    pub disabled_reason: Option<String>,
}

/// A server (VM).
#[derive(Debug, Clone)]
pub struct Server {
    pub id: String,
    pub name: String,
    /// `ACTIVE`, `MIGRATING`, `SHUTOFF`, `ERROR`, …
    pub status: String,
    /// The compute service's host (`OS-EXT-SRV-ATTR:host`).
    pub host: Option<String>,
    pub task_state: Option<String>,
    pub vcpus: u32,
    pub ram_mb: f64,
    pub flavor: String,
    /// Attached volumes (ids).
    pub volumes: Vec<String>,
}

/// A migration record (`/os-migrations`).
#[derive(Debug, Clone, Deserialize)]
pub struct Migration {
    pub id: i64,
    pub status: String,
    pub source_compute: Option<String>,
    pub dest_compute: Option<String>,
    #[serde(default)]
    pub migration_type: Option<String>,
}

/// An in-progress live migration's figures (`/servers/{id}/migrations`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MigrationProgress {
    pub id: i64,
    pub status: String,
    pub memory_total_bytes: Option<f64>,
    pub memory_processed_bytes: Option<f64>,
    pub memory_remaining_bytes: Option<f64>,
    pub disk_total_bytes: Option<f64>,
    pub disk_processed_bytes: Option<f64>,
}

/// A server group: Nova's own placement rule.
#[derive(Debug, Clone)]
pub struct ServerGroup {
    pub id: String,
    pub name: String,
    /// `affinity`, `anti-affinity`, `soft-affinity`, `soft-anti-affinity`.
    pub policy: String,
    pub members: Vec<String>,
}

/// A host aggregate (with its availability zone, if it defines one).
#[derive(Debug, Clone, Deserialize)]
pub struct Aggregate {
    pub name: String,
    pub availability_zone: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Nova's message in an error body (`{"badRequest": {"message": …}}`), else the body's start.
fn error_message(body: &str) -> String {
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(body) {
        if let Some(msg) = m.values().find_map(|v| v["message"].as_str()) {
            return msg.to_string();
        }
    }
    let t = body.trim();
    if t.is_empty() {
        "no message".into()
    } else {
        t.chars().take(300).collect()
    }
}

impl Nova {
    /// A client; nothing is called until the first request (see [`Nova::connect`]).
    pub fn new(cloud: Cloud, timeout: Duration) -> Nova {
        Nova { cloud, http: keystone::http_agent(timeout), session: Mutex::new(None), retry: Retry::default() }
    }

    /// Authenticates and negotiates the microversion now; returns it.
    pub fn connect(&self) -> Result<String, NovaError> {
        let mut s = self.session.lock().unwrap_or_else(|p| p.into_inner());
        *s = None;
        let sess = self.open_session()?;
        let mv = sess.microversion.clone();
        *s = Some(sess);
        Ok(mv)
    }

    pub fn cloud(&self) -> &Cloud {
        &self.cloud
    }

    fn open_session(&self) -> Result<Session, NovaError> {
        let token = self.with_retries(true, || {
            keystone::authenticate(&self.http, &self.cloud, "compute").map_err(|e| {
                if e.starts_with("Keystone refused") || e.starts_with("no ") {
                    NovaError::Auth(e)
                } else {
                    NovaError::Unavailable(e)
                }
            })
        })?;
        let url = format!("{}/", token.endpoint);
        let body = self.with_retries(true, || {
            let mut r = self
                .http
                .get(&url)
                .header("X-Auth-Token", &token.value)
                .call()
                .map_err(|e| NovaError::Unavailable(format!("Nova at {url}: {e}")))?;
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            if status >= 500 {
                return Err(NovaError::Unavailable(format!("Nova at {url}: {status} {}", error_message(&text))));
            }
            serde_json::from_str::<Value>(&text)
                .map_err(|e| NovaError::Protocol { what: format!("GET {url}"), why: e.to_string() })
        })?;
        let max = body["version"]["version"].as_str().and_then(parse_version).ok_or_else(|| NovaError::Protocol {
            what: format!("GET {url}"),
            why: "no version.version (is this the compute v2.1 endpoint?)".into(),
        })?;
        if max < MIN_MICROVERSION {
            return Err(NovaError::Auth(format!(
                "Nova at {url} supports microversions up to {}.{}; AMVM needs {}.{} (Queens) or newer",
                max.0, max.1, MIN_MICROVERSION.0, MIN_MICROVERSION.1
            )));
        }
        let mv = max.min(WANTED_MICROVERSION);
        Ok(Session { token, microversion: format!("{}.{}", mv.0, mv.1), at: Instant::now() })
    }

    /// Runs `f` until it succeeds, fails for good, or the attempts are used up. `safe`: the call
    /// may be repeated even after a failure of unknown effect.
    fn with_retries<T, E: Into<Attempt>>(
        &self,
        safe: bool,
        mut f: impl FnMut() -> Result<T, E>,
    ) -> Result<T, NovaError> {
        let mut wait = self.retry.base;
        let mut n = 0;
        loop {
            n += 1;
            match f() {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let Attempt { error, retryable } = e.into();
                    let again = retryable == Retryable::Always || (safe && retryable == Retryable::IfSafe);
                    if !again || n >= self.retry.attempts.max(1) {
                        return Err(error);
                    }
                    tracing::warn!("{error}; retrying in {:.1} s ({n}/{})", wait.as_secs_f64(), self.retry.attempts);
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(8));
                }
            }
        }
    }

    /// One API call: `(status, body, request id)`; refusals (4xx) are errors with Nova's message.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value, Option<String>), NovaError> {
        let safe = method == "GET";
        let mut reauthed = false;
        loop {
            let (token, endpoint, mv) = {
                let mut s = self.session.lock().unwrap_or_else(|p| p.into_inner());
                if s.as_ref().is_none_or(|s| s.at.elapsed() > TOKEN_RENEW) {
                    *s = Some(self.open_session()?);
                }
                let s = s.as_ref().expect("session just opened");
                (s.token.value.clone(), s.token.endpoint.clone(), s.microversion.clone())
            };
            let url = format!("{endpoint}{path}");
            let what = format!("{method} {path}");
            let r = self.with_retries(safe, || {
                let b = ureq::http::Request::builder()
                    .method(method)
                    .uri(&url)
                    .header("X-Auth-Token", &token)
                    .header("OpenStack-API-Version", format!("compute {mv}"))
                    .header("X-OpenStack-Nova-API-Version", &mv)
                    .header("Accept", "application/json");
                let sent = match body {
                    Some(v) => b
                        .header("Content-Type", "application/json")
                        .body(v.to_string())
                        .map_err(|e| NovaError::Protocol { what: what.clone(), why: e.to_string() })
                        .map(|req| self.http.run(req)),
                    None => b
                        .body(())
                        .map_err(|e| NovaError::Protocol { what: what.clone(), why: e.to_string() })
                        .map(|req| self.http.run(req)),
                }?;
                let mut resp = match sent {
                    Ok(r) => r,
                    Err(e) => {
                        let never_sent = matches!(e, ureq::Error::ConnectionFailed | ureq::Error::HostNotFound)
                            || matches!(&e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused);
                        return Err(Attempt {
                            error: NovaError::Unavailable(format!("{what} at {endpoint}: {e}")),
                            retryable: if never_sent { Retryable::Always } else { Retryable::IfSafe },
                        });
                    }
                };
                let status = resp.status().as_u16();
                let rid = resp
                    .headers()
                    .get("x-openstack-request-id")
                    .or_else(|| resp.headers().get("x-compute-request-id"))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let text = resp.body_mut().read_to_string().unwrap_or_default();
                match status {
                    429 | 503 => Err(Attempt {
                        error: NovaError::Unavailable(format!("{what}: {status} {}", error_message(&text))),
                        retryable: Retryable::Always,
                    }),
                    500..=599 => Err(Attempt {
                        error: NovaError::Unavailable(format!("{what}: {status} {}", error_message(&text))),
                        retryable: Retryable::IfSafe,
                    }),
                    400..=499 => Err(Attempt {
                        error: NovaError::Refused { status, message: error_message(&text) },
                        retryable: Retryable::Never,
                    }),
                    _ => {
                        let v = if text.trim().is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_str(&text)
                                .map_err(|e| NovaError::Protocol { what: what.clone(), why: e.to_string() })?
                        };
                        Ok((status, v, rid))
                    }
                }
            });
            match r {
                Err(NovaError::Refused { status: 401, .. }) if !reauthed => {
                    reauthed = true;
                    *self.session.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                other => return other,
            }
        }
    }

    /// Any compute API call (`path` below the endpoint, e.g. `/flavors`), with the client's
    /// token, microversion and retries: for what this client has no method for.
    pub fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, NovaError> {
        self.call(method, path, body).map(|(_, v, _)| v)
    }

    fn get(&self, path: &str) -> Result<Value, NovaError> {
        self.call("GET", path, None).map(|(_, v, _)| v)
    }

    fn list<T: serde::de::DeserializeOwned>(&self, path: &str, key: &str) -> Result<Vec<T>, NovaError> {
        let v = self.get(path)?;
        serde_json::from_value(v[key].clone())
            .map_err(|e| NovaError::Protocol { what: format!("GET {path}"), why: e.to_string() })
    }

    pub fn hypervisors(&self) -> Result<Vec<Hypervisor>, NovaError> {
        self.list("/os-hypervisors/detail", "hypervisors")
    }

    pub fn compute_services(&self) -> Result<Vec<Service>, NovaError> {
        self.list("/os-services?binary=nova-compute", "services")
    }

    /// Enables a compute service, or disables it with a reason (Nova then schedules nothing there).
    pub fn set_service(&self, id: &str, enabled: bool, reason: &str) -> Result<(), NovaError> {
        let body = if enabled {
            json!({"status": "enabled"})
        } else {
            json!({"status": "disabled", "disabled_reason": reason})
        };
        self.call("PUT", &format!("/os-services/{id}"), Some(&body)).map(|_| ())
    }

    /// Every server of every project (pages followed).
    pub fn servers(&self) -> Result<Vec<Server>, NovaError> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let path = match &marker {
                Some(m) => format!("/servers/detail?all_tenants=1&limit=1000&marker={m}"),
                None => "/servers/detail?all_tenants=1&limit=1000".into(),
            };
            let v = self.get(&path)?;
            let page = v["servers"].as_array().cloned().unwrap_or_default();
            for s in &page {
                let Some(id) = s["id"].as_str() else { continue };
                out.push(Server {
                    id: id.into(),
                    name: s["name"].as_str().unwrap_or(id).into(),
                    status: s["status"].as_str().unwrap_or("UNKNOWN").into(),
                    host: s["OS-EXT-SRV-ATTR:host"].as_str().map(str::to_string),
                    task_state: s["OS-EXT-STS:task_state"].as_str().map(str::to_string),
                    vcpus: s["flavor"]["vcpus"].as_u64().unwrap_or(1).max(1) as u32,
                    ram_mb: s["flavor"]["ram"].as_f64().unwrap_or(0.0),
                    flavor: s["flavor"]["original_name"].as_str().unwrap_or("?").into(),
                    volumes: s["os-extended-volumes:volumes_attached"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x["id"].as_str().map(str::to_string)).collect())
                        .unwrap_or_default(),
                });
            }
            let next = v["servers_links"].as_array().is_some_and(|l| l.iter().any(|x| x["rel"] == "next"));
            match page.last().and_then(|s| s["id"].as_str()) {
                Some(last) if next && page.len() >= 1000 => marker = Some(last.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// CPU time used by a server's vCPUs so far (ns, summed), from its diagnostics.
    pub fn cpu_time_ns(&self, server: &str) -> Result<Option<f64>, NovaError> {
        let v = self.get(&format!("/servers/{server}/diagnostics"))?;
        let cpus = v["cpu_details"].as_array();
        Ok(cpus.and_then(|c| {
            let times: Vec<f64> = c.iter().filter_map(|x| x["time"].as_f64()).collect();
            (!times.is_empty()).then(|| times.iter().sum())
        }))
    }

    /// Asks Nova to live-migrate `server` to `host` (block migration when there is no shared
    /// storage: `auto`); Nova's scheduler still checks the destination (server groups, capacity).
    /// Returns the request id (the instance action to read a failure's reason from).
    pub fn live_migrate(&self, server: &str, host: &str) -> Result<Option<String>, NovaError> {
        let body = json!({"os-migrateLive": {"host": host, "block_migration": "auto"}});
        self.call("POST", &format!("/servers/{server}/action"), Some(&body)).map(|(_, _, rid)| rid)
    }

    /// Live-migration records of a server, newest first.
    pub fn migrations(&self, server: &str) -> Result<Vec<Migration>, NovaError> {
        let mut m: Vec<Migration> =
            self.list(&format!("/os-migrations?instance_uuid={server}&migration_type=live-migration"), "migrations")?;
        m.sort_by_key(|x| std::cmp::Reverse(x.id));
        Ok(m)
    }

    /// The server's live migrations in progress, with their figures.
    pub fn migrations_in_progress(&self, server: &str) -> Result<Vec<MigrationProgress>, NovaError> {
        self.list(&format!("/servers/{server}/migrations"), "migrations")
    }

    /// Aborts a live migration in progress.
    pub fn abort_migration(&self, server: &str, migration: i64) -> Result<(), NovaError> {
        self.call("DELETE", &format!("/servers/{server}/migrations/{migration}"), None).map(|_| ())
    }

    /// Why the instance action `request_id` failed: the failed events' details, else the
    /// action's message.
    pub fn action_failure(&self, server: &str, request_id: &str) -> Result<Option<String>, NovaError> {
        let v = self.get(&format!("/servers/{server}/os-instance-actions/{request_id}"))?;
        let a = &v["instanceAction"];
        let events = a["events"].as_array().cloned().unwrap_or_default();
        let why: Vec<String> = events
            .iter()
            .filter(|e| e["result"] == "Error")
            .map(|e| {
                let ev = e["event"].as_str().unwrap_or("?");
                match e["details"].as_str() {
                    Some(d) => format!("{ev}: {d}"),
                    None => ev.to_string(),
                }
            })
            .collect();
        Ok(if why.is_empty() { a["message"].as_str().map(str::to_string) } else { Some(why.join("; ")) })
    }

    /// The server's fault message, if it has one.
    pub fn server_fault(&self, server: &str) -> Result<Option<String>, NovaError> {
        let v = self.get(&format!("/servers/{server}"))?;
        Ok(v["server"]["fault"]["message"].as_str().map(str::to_string))
    }

    /// Every server group of every project.
    pub fn server_groups(&self) -> Result<Vec<ServerGroup>, NovaError> {
        let v = self.get("/os-server-groups?all_projects=True&limit=1000")?;
        Ok(v["server_groups"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| {
                        let policy = g["policy"]
                            .as_str()
                            .or_else(|| g["policies"].as_array().and_then(|p| p.first()).and_then(Value::as_str))?;
                        Some(ServerGroup {
                            id: g["id"].as_str()?.into(),
                            name: g["name"].as_str().unwrap_or("").into(),
                            policy: policy.into(),
                            members: g["members"]
                                .as_array()
                                .map(|m| m.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                                .unwrap_or_default(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    pub fn aggregates(&self) -> Result<Vec<Aggregate>, NovaError> {
        self.list("/os-aggregates", "aggregates")
    }
}

/// One failed try and whether it may be tried again.
struct Attempt {
    error: NovaError,
    retryable: Retryable,
}

#[derive(PartialEq)]
enum Retryable {
    /// Nothing was done (503, 429, no connection): always.
    Always,
    /// Effect unknown (5xx, broken connection): only for calls that may be repeated.
    IfSafe,
    Never,
}

impl From<NovaError> for Attempt {
    fn from(error: NovaError) -> Attempt {
        let retryable = match &error {
            NovaError::Unavailable(_) => Retryable::IfSafe,
            _ => Retryable::Never,
        };
        Attempt { error, retryable }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A tiny Keystone + Nova: answers each request with the next scripted `(status, body)` for
    /// its path prefix, and records the requests.
    fn server(script: Vec<(&'static str, u16, String)>) -> (String, Arc<Mutex<Vec<String>>>, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (seen2, count2, base2) = (seen.clone(), count.clone(), base.clone());
        std::thread::spawn(move || {
            let mut script = script;
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let mut len = 0;
                let mut mv = String::new();
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if let Some(v) = lower.strip_prefix("openstack-api-version:") {
                        mv = v.trim().to_string();
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                seen2.lock().unwrap().push(format!("{} {path} [{mv}]", line.split_whitespace().next().unwrap()));
                count2.fetch_add(1, Ordering::SeqCst);
                let i = script.iter().position(|(p, _, _)| path.starts_with(p));
                let (status, body) = match i {
                    Some(i) => {
                        let (_, st, b) = script.remove(i);
                        (st, b.replace("BASE", &base2))
                    }
                    None => (404, "{}".into()),
                };
                let extra = if path.starts_with("/v3/auth") { "X-Subject-Token: tok\r\n" } else { "" };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\n{extra}x-openstack-request-id: req-1\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (base, seen, count)
    }

    fn auth_ok() -> (&'static str, u16, String) {
        (
            "/v3/auth/tokens",
            201,
            r#"{"token": {"catalog": [{"type": "compute", "endpoints": [{"interface": "public", "region_id": "R", "url": "BASE/v2.1"}]}]}}"#.into(),
        )
    }

    fn version(max: &str) -> (&'static str, u16, String) {
        ("/v2.1/", 200, format!(r#"{{"version": {{"id": "v2.1", "version": "{max}", "min_version": "2.1"}}}}"#))
    }

    fn nova(base: &str) -> Nova {
        let text = format!(
            "clouds:\n  t:\n    auth:\n      auth_url: {base}\n      username: u\n      password: p\n      project_name: p\n"
        );
        let mut n = Nova::new(Cloud::parse(&text, "t").unwrap(), Duration::from_secs(5));
        n.retry = Retry { attempts: 3, base: Duration::from_millis(10) };
        n
    }

    #[test]
    fn negotiates_the_microversion_and_refuses_old_clouds() {
        let (base, _, _) = server(vec![auth_ok(), version("2.93")]);
        assert_eq!(nova(&base).connect().unwrap(), "2.87");
        let (base, _, _) = server(vec![auth_ok(), version("2.72")]);
        assert_eq!(nova(&base).connect().unwrap(), "2.72");
        let (base, _, _) = server(vec![auth_ok(), version("2.53")]);
        let e = nova(&base).connect().unwrap_err();
        assert!(matches!(&e, NovaError::Auth(m) if m.contains("needs 2.60")), "{e}");
        let (base, _, _) = server(vec![("/v3/auth/tokens", 401, r#"{"error": {"message": "bad password"}}"#.into())]);
        let e = nova(&base).connect().unwrap_err();
        assert!(matches!(&e, NovaError::Auth(m) if m.contains("bad password")), "{e}");
    }

    #[test]
    fn retries_transient_errors_reauthenticates_and_never_retries_refusals() {
        let (base, seen, _) = server(vec![
            auth_ok(),
            version("2.93"),
            ("/v2.1/os-hypervisors", 503, "{}".into()),
            ("/v2.1/os-hypervisors", 500, r#"{"computeFault": {"message": "oops"}}"#.into()),
            ("/v2.1/os-hypervisors", 401, "{}".into()),
            auth_ok(),
            version("2.93"),
            ("/v2.1/os-hypervisors", 200, r#"{"hypervisors": [{"id": "h1", "hypervisor_hostname": "cmp1", "state": "up", "status": "enabled", "vcpus": 4, "memory_mb": 8192, "service": {"host": "cmp1", "id": "s1", "disabled_reason": null}}]}"#.into()),
            ("/v2.1/servers/x/action", 400, r#"{"badRequest": {"message": "Compute service of cmp2 is unavailable at this time."}}"#.into()),
            ("/v2.1/servers/y/action", 500, "{}".into()),
            ("/v2.1/servers/z/action", 503, "{}".into()),
            ("/v2.1/servers/z/action", 202, "".into()),
        ]);
        let n = nova(&base);
        let h = n.hypervisors().unwrap();
        assert_eq!(h[0].hypervisor_hostname, "cmp1");
        assert_eq!(h[0].vcpus, 4);
        let e = n.live_migrate("x", "cmp2").unwrap_err();
        assert_eq!(
            e,
            NovaError::Refused { status: 400, message: "Compute service of cmp2 is unavailable at this time.".into() }
        );
        // A 500 on a POST: its effect is unknown, so it is not repeated.
        assert!(matches!(n.live_migrate("y", "cmp2").unwrap_err(), NovaError::Unavailable(_)));
        // A 503 is: nothing was done.
        assert_eq!(n.live_migrate("z", "cmp2").unwrap(), Some("req-1".into()));
        let seen = seen.lock().unwrap().clone();
        let posts = |p: &str| seen.iter().filter(|s| s.starts_with(&format!("POST /v2.1/servers/{p}/"))).count();
        assert_eq!((posts("x"), posts("y"), posts("z")), (1, 1, 2), "{seen:#?}");
        assert!(seen.iter().any(|s| s.contains("/os-hypervisors") && s.ends_with("[compute 2.87]")), "{seen:#?}");
        assert_eq!(seen.iter().filter(|s| s.starts_with("POST /v3/auth/tokens")).count(), 2, "re-authenticated once");
    }

    #[test]
    fn nova_error_messages() {
        assert_eq!(error_message(r#"{"conflictingRequest": {"message": "busy", "code": 409}}"#), "busy");
        assert_eq!(error_message(""), "no message");
        assert_eq!(error_message("<html>bad gateway</html>"), "<html>bad gateway</html>");
        assert_eq!(parse_version("2.93"), Some((2, 93)));
        assert_eq!(parse_version("x"), None);
    }
}
