//! `telegram` mediator plugin: two Telegram bots in one group carry sealed messages.
//!
//! Bots normally never see other bots' messages. With Telegram's Bot-to-Bot
//! Communication Mode switched on for both bots (BotFather), a bot in a group receives
//! another bot's message when that message mentions it in a command (`/cmd@ThatBot`).
//! So each message is a document (the sealed bytes, `sendDocument`) whose caption is
//! the command `/plexus@<PeerBot>`. The peer bot picks it up with long polling
//! (`getUpdates`), accepts it only from the configured peer bot's user id in the
//! configured chat and only when the caption addresses it, and downloads the document
//! (`getFile`, then the file URL), bounded in size.
//!
//! Settings (YAML or JSON):
//! ```yaml
//! chat_id: -1001234567890          # the group both bots are in
//! peer_bot_id: 7000000001          # the peer bot's numeric user id
//! token_env: PLEXUS_TELEGRAM_TOKEN # env var holding this side's bot token (default), or
//! token_file: /home/me/.config/plexus/telegram.token   # a file (mode 0600) holding it
//! api_url: https://api.telegram.org   # optional; tests point it at a local server
//! poll_timeout_secs: 25            # optional, long-poll timeout 1..=50
//! max_message_bytes: 1048576       # optional, larger documents are skipped
//! message_thread_id: 42            # optional, a forum topic
//! ```
//! A token in the settings themselves (`token:`) is refused unless
//! `allow_token_in_settings: true` says the user means it. `send`'s recipient is the
//! peer bot's username (`PeerBot` or `@PeerBot`).

// ureq's own error type is large; it lives only for one HTTP exchange at a time.
#![allow(clippy::result_large_err)]

use plexus_plugin_sdk::{export_mediator, MediatorPlugin, Message, Outcome, PluginError};
use serde::Deserialize;
use serde_json::Value;
use std::collections::VecDeque;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest JSON answer read from the Bot API.
const MAX_JSON: u64 = 4 * 1024 * 1024;
/// Updates asked for per `getUpdates`, so an answer stays small.
const UPDATES_PER_POLL: &str = "20";
/// Longest `retry_after` we are willing to wait out inside one call.
const MAX_RETRY_AFTER: u64 = 60;
/// Attempts per API call (network errors, 5xx, 429).
const ATTEMPTS: u32 = 4;
/// Bot API file downloads are limited to 20 MB.
const MAX_LIMIT: u64 = 20 * 1024 * 1024;

/// A bot token; `Debug` never prints it.
#[derive(Clone)]
struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    chat_id: i64,
    peer_bot_id: i64,
    #[serde(default)]
    token_env: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    allow_token_in_settings: bool,
    #[serde(default = "default_api")]
    api_url: String,
    #[serde(default = "default_poll")]
    poll_timeout_secs: u64,
    #[serde(default = "default_max")]
    max_message_bytes: u64,
    #[serde(default)]
    message_thread_id: Option<i64>,
}

fn default_api() -> String {
    "https://api.telegram.org".into()
}

fn default_poll() -> u64 {
    25
}

fn default_max() -> u64 {
    1024 * 1024
}

fn config(m: impl Into<String>) -> PluginError {
    PluginError::Config(m.into())
}

fn valid_token(t: &str) -> bool {
    // `<bot id>:<secret>`; anything else would be pasted into URLs.
    match t.split_once(':') {
        Some((id, secret)) => {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_digit())
                && !secret.is_empty()
                && secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }
        None => false,
    }
}

fn load_token(s: &Settings) -> Result<Token, PluginError> {
    let sources =
        s.token.is_some() as u8 + s.token_file.is_some() as u8 + s.token_env.is_some() as u8;
    if sources > 1 {
        return Err(config(
            "give the bot token one way: token_env, token_file or token",
        ));
    }
    let raw = if let Some(t) = &s.token {
        if !s.allow_token_in_settings {
            return Err(config(
                "a bot token in the settings is refused: use token_env or token_file, \
                 or set allow_token_in_settings: true if you really mean it",
            ));
        }
        t.clone()
    } else if let Some(path) = &s.token_file {
        refuse_readable_by_others(path)?;
        std::fs::read_to_string(path)
            .map_err(|e| config(format!("cannot read token_file {}: {e}", path.display())))?
    } else {
        let var = s
            .token_env
            .clone()
            .unwrap_or_else(|| "PLEXUS_TELEGRAM_TOKEN".into());
        std::env::var(&var).map_err(|_| {
            config(format!(
                "environment variable {var} with the bot token is not set"
            ))
        })?
    };
    let t = raw.trim().to_string();
    if !valid_token(&t) {
        return Err(config(
            "the bot token does not look like <digits>:<secret> (from BotFather)",
        ));
    }
    Ok(Token(t))
}

#[cfg(unix)]
fn refuse_readable_by_others(path: &std::path::Path) -> Result<(), PluginError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| config(format!("token_file {}: {e}", path.display())))?;
    if meta.mode() & 0o077 != 0 {
        return Err(config(format!(
            "token_file {} is readable by other users: chmod 600 it",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_readable_by_others(_: &std::path::Path) -> Result<(), PluginError> {
    Ok(())
}

/// A document seen in an update, not yet downloaded.
#[derive(Debug)]
#[doc(hidden)]
pub struct Pending {
    message_id: i64,
    from: String,
    file_id: String,
}

/// The Telegram mediator.
pub struct Telegram {
    api: String,
    token: Token,
    chat_id: i64,
    peer_bot_id: i64,
    thread: Option<i64>,
    poll_timeout: u64,
    max: u64,
    agent: ureq::Agent,
    /// Next `getUpdates` offset (last seen update_id + 1), which confirms older updates.
    offset: i64,
    own_username: Option<String>,
    pending: VecDeque<Pending>,
}

impl fmt::Debug for Telegram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telegram")
            .field("api", &self.api)
            .field("chat_id", &self.chat_id)
            .finish_non_exhaustive()
    }
}

/// A failed HTTP exchange before it is mapped to a [`PluginError`].
enum Failure {
    /// Network, DNS, TLS, timeouts; worth a retry.
    Transport(String),
    /// The answer exceeded [`MAX_JSON`]; its first bytes.
    TooLong(Vec<u8>),
    /// The API answered an error.
    Api {
        code: u16,
        description: String,
        retry_after: Option<u64>,
    },
}

impl Telegram {
    fn url(&self, method: &str) -> String {
        format!("{}/bot{}/{method}", self.api, self.token.0)
    }

    /// Removes the token from a message (ureq errors quote the URL).
    fn scrub(&self, s: &str) -> String {
        s.replace(&self.token.0, "<token>")
    }

    /// Reads at most `limit` bytes of a body; `None` if it is longer.
    fn read_bounded(resp: ureq::Response, limit: u64) -> Result<Option<Vec<u8>>, Failure> {
        let mut body = Vec::new();
        resp.into_reader()
            .take(limit + 1)
            .read_to_end(&mut body)
            .map_err(|e| Failure::Transport(format!("reading the answer: {e}")))?;
        Ok((body.len() as u64 <= limit).then_some(body))
    }

    fn api_failure(code: u16, resp: ureq::Response) -> Failure {
        let header_retry = resp
            .header("Retry-After")
            .and_then(|v| v.trim().parse().ok());
        let body = Self::read_bounded(resp, 64 * 1024)
            .ok()
            .flatten()
            .unwrap_or_default();
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Failure::Api {
            code,
            description: json["description"]
                .as_str()
                .unwrap_or("(no description)")
                .chars()
                .take(300)
                .collect(),
            retry_after: json["parameters"]["retry_after"].as_u64().or(header_retry),
        }
    }

    /// One exchange: the request built by `go`, the JSON `result` out.
    fn exchange(
        &self,
        go: &dyn Fn() -> Result<ureq::Response, ureq::Error>,
    ) -> Result<Value, Failure> {
        let resp = match go() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, resp)) => return Err(Self::api_failure(code, resp)),
            Err(ureq::Error::Transport(t)) => {
                return Err(Failure::Transport(format!(
                    "{}: {}",
                    t.kind(),
                    t.message().unwrap_or("no detail")
                )))
            }
        };
        let mut body = Vec::new();
        resp.into_reader()
            .take(MAX_JSON + 1)
            .read_to_end(&mut body)
            .map_err(|e| Failure::Transport(format!("reading the answer: {e}")))?;
        if body.len() as u64 > MAX_JSON {
            body.truncate(256);
            return Err(Failure::TooLong(body));
        }
        let json: Value = serde_json::from_slice(&body).map_err(|e| Failure::Api {
            code: 200,
            description: format!("answer is not JSON: {e}"),
            retry_after: None,
        })?;
        if json["ok"].as_bool() != Some(true) {
            return Err(Failure::Api {
                code: json["error_code"].as_u64().unwrap_or(200) as u16,
                description: json["description"]
                    .as_str()
                    .unwrap_or("ok is not true")
                    .chars()
                    .take(300)
                    .collect(),
                retry_after: json["parameters"]["retry_after"].as_u64(),
            });
        }
        Ok(json["result"].clone())
    }

    /// Calls `method` with bounded retries on network errors, 5xx and 429, never
    /// sleeping past `deadline`.
    fn call(
        &self,
        method: &str,
        deadline: Option<Instant>,
        go: &dyn Fn() -> Result<ureq::Response, ureq::Error>,
    ) -> Result<Value, PluginError> {
        self.call_raw(method, deadline, go)?.map_err(|_| {
            PluginError::Protocol(format!("{method}: answer longer than {MAX_JSON} bytes"))
        })
    }

    /// [`Telegram::call`], but an oversized answer comes back as `Ok(Err(first bytes))`.
    fn call_raw(
        &self,
        method: &str,
        deadline: Option<Instant>,
        go: &dyn Fn() -> Result<ureq::Response, ureq::Error>,
    ) -> Result<Result<Value, Vec<u8>>, PluginError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (wait, error) = match self.exchange(go) {
                Ok(v) => return Ok(Ok(v)),
                Err(Failure::TooLong(head)) => return Ok(Err(head)),
                Err(Failure::Transport(m)) => (
                    Duration::from_millis(500 << (attempt - 1)),
                    PluginError::Unreachable(format!("{method}: {}", self.scrub(&m))),
                ),
                Err(Failure::Api {
                    code: 429,
                    retry_after,
                    ..
                }) => {
                    let secs = retry_after.unwrap_or(1);
                    let e = PluginError::Unreachable(format!(
                        "{method}: rate limited by Telegram, retry after {secs} s"
                    ));
                    if secs > MAX_RETRY_AFTER {
                        return Err(e);
                    }
                    log::warn!("{method}: rate limited, waiting {secs} s as asked");
                    (Duration::from_secs(secs), e)
                }
                Err(Failure::Api {
                    code, description, ..
                }) if code >= 500 => (
                    Duration::from_millis(500 << (attempt - 1)),
                    PluginError::Unreachable(format!(
                        "{method}: server error {code}: {}",
                        self.scrub(&description)
                    )),
                ),
                Err(Failure::Api {
                    code, description, ..
                }) => {
                    let d = self.scrub(&description);
                    return Err(match code {
                        401 | 404 => PluginError::Auth(format!(
                            "{method}: Telegram refused the bot token ({code} {d}); check it with BotFather"
                        )),
                        403 => PluginError::Auth(format!(
                            "{method}: forbidden ({d}); is the bot still a member of the group?"
                        )),
                        409 => PluginError::Protocol(format!(
                            "{method}: conflict ({d}); another process polls this bot or a webhook is set \
                             (remove it with deleteWebhook)"
                        )),
                        _ => PluginError::Protocol(format!("{method}: Telegram answered {code}: {d}")),
                    });
                }
            };
            let fits = match deadline {
                Some(d) => Instant::now() + wait < d,
                None => true,
            };
            if attempt >= ATTEMPTS || !fits {
                return Err(error);
            }
            std::thread::sleep(wait);
        }
    }

    fn own_username(&mut self) -> Result<String, PluginError> {
        if let Some(u) = &self.own_username {
            return Ok(u.clone());
        }
        let url = self.url("getMe");
        let me = self.call("getMe", None, &|| self.agent.get(&url).call())?;
        let name = me["username"]
            .as_str()
            .ok_or_else(|| PluginError::Protocol("getMe: no username in the answer".into()))?
            .to_string();
        log::info!("telegram: this side is @{name}");
        self.own_username = Some(name.clone());
        Ok(name)
    }

    /// Reads one `getUpdates` batch into `pending`.
    fn poll(&mut self, timeout_secs: u64, deadline: Instant) -> Result<(), PluginError> {
        let me = self.own_username()?;
        let url = self.url("getUpdates");
        let offset = self.offset.to_string();
        let request_timeout = Duration::from_secs(timeout_secs + 10);
        let get = |limit: &str, timeout: u64| {
            let timeout = timeout.to_string();
            self.call_raw("getUpdates", Some(deadline), &|| {
                self.agent
                    .get(&url)
                    .timeout(request_timeout)
                    .query("offset", &offset)
                    .query("timeout", &timeout)
                    .query("limit", limit)
                    .query("allowed_updates", "[\"message\"]")
                    .call()
            })
        };
        let result = match get(UPDATES_PER_POLL, timeout_secs)? {
            Ok(v) => v,
            // Some update in the batch is huge: look at them one at a time, and skip
            // the first one if it alone is too big (its id starts the answer).
            Err(_) => match get("1", 0)? {
                Ok(v) => v,
                Err(head) => {
                    let id = first_update_id(&head).ok_or_else(|| {
                        PluginError::Protocol(format!(
                            "getUpdates: an update longer than {MAX_JSON} bytes whose id cannot be read"
                        ))
                    })?;
                    log::warn!("telegram: skipping update {id}: longer than {MAX_JSON} bytes");
                    self.offset = self.offset.max(id.saturating_add(1));
                    return Ok(());
                }
            },
        };
        let updates = result
            .as_array()
            .ok_or_else(|| PluginError::Protocol("getUpdates: result is not a list".into()))?;
        for update in updates {
            let Some(id) = update["update_id"].as_i64() else {
                log::warn!("telegram: skipping an update without update_id");
                continue;
            };
            self.offset = self.offset.max(id.saturating_add(1));
            if let Some(p) = self.accept(&update["message"], &me) {
                self.pending.push_back(p);
            }
        }
        Ok(())
    }

    /// Whether a message is a plexus document from the peer bot to us in our chat.
    #[doc(hidden)]
    pub fn accept(&self, m: &Value, me: &str) -> Option<Pending> {
        if m.is_null() || m["chat"]["id"].as_i64() != Some(self.chat_id) {
            return None;
        }
        if m["from"]["id"].as_i64() != Some(self.peer_bot_id) {
            log::debug!("telegram: ignoring a message from user {}", m["from"]["id"]);
            return None;
        }
        let caption = m["caption"].as_str().unwrap_or("");
        let command = caption.split_whitespace().next().unwrap_or("");
        let addressed = command
            .strip_prefix("/plexus@")
            .is_some_and(|bot| bot.eq_ignore_ascii_case(me));
        if !addressed {
            log::debug!("telegram: ignoring a peer message not addressed to @{me}");
            return None;
        }
        let doc = &m["document"];
        let Some(file_id) = doc["file_id"].as_str() else {
            log::warn!("telegram: a plexus command from the peer without a document; ignored");
            return None;
        };
        if let Some(size) = doc["file_size"].as_u64() {
            if size > self.max {
                log::warn!(
                    "telegram: skipping a {size}-byte document from the peer (max_message_bytes {})",
                    self.max
                );
                return None;
            }
        }
        let from = m["from"]["username"]
            .as_str()
            .map(|u| format!("@{u}"))
            .unwrap_or_else(|| self.peer_bot_id.to_string());
        Some(Pending {
            message_id: m["message_id"].as_i64().unwrap_or(0),
            from,
            file_id: file_id.to_string(),
        })
    }

    /// Downloads a pending document; `Ok(None)` when it turned out oversized.
    fn download(&self, p: &Pending, deadline: Instant) -> Result<Option<Vec<u8>>, PluginError> {
        let url = self.url("getFile");
        let file = self.call("getFile", Some(deadline), &|| {
            self.agent.get(&url).query("file_id", &p.file_id).call()
        })?;
        if file["file_size"].as_u64().is_some_and(|s| s > self.max) {
            log::warn!(
                "telegram: skipping document {}: getFile reports it over max_message_bytes",
                p.message_id
            );
            return Ok(None);
        }
        let path = file["file_path"]
            .as_str()
            .filter(|f| {
                !f.is_empty() && !f.contains("..") && !f.starts_with('/') && !f.contains('?')
            })
            .ok_or_else(|| PluginError::Protocol("getFile: missing or odd file_path".into()))?;
        let url = format!("{}/file/bot{}/{path}", self.api, self.token.0);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = match self.agent.get(&url).call() {
                Ok(resp) => Self::read_bounded(resp, self.max),
                Err(ureq::Error::Status(code, resp)) => Err(Self::api_failure(code, resp)),
                Err(ureq::Error::Transport(t)) => Err(Failure::Transport(t.kind().to_string())),
            };
            match outcome {
                Ok(Some(body)) if !body.is_empty() => return Ok(Some(body)),
                Ok(Some(_)) => {
                    return Err(PluginError::Protocol("downloaded document is empty".into()))
                }
                Ok(None) => {
                    log::warn!(
                        "telegram: document {} is larger than max_message_bytes; skipped",
                        p.message_id
                    );
                    return Ok(None);
                }
                Err(Failure::Api {
                    code, description, ..
                }) if code < 500 => {
                    return Err(PluginError::Protocol(format!(
                        "downloading the document: {code} {}",
                        self.scrub(&description)
                    )))
                }
                Err(_)
                    if attempt < ATTEMPTS && Instant::now() + Duration::from_secs(1) < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(500 << (attempt - 1)));
                }
                Err(_) => {
                    return Err(PluginError::Unreachable(
                        "downloading the document failed".into(),
                    ))
                }
            }
        }
    }

    fn multipart(&self, caption: &str, sealed: &[u8]) -> (String, Vec<u8>) {
        let mut boundary = String::new();
        // A boundary that occurs in the content would cut the document short.
        for salt in 0u64.. {
            boundary = format!("plexus-{:016x}{salt}", random_u64());
            if !contains(sealed, boundary.as_bytes()) {
                break;
            }
        }
        let mut body = Vec::with_capacity(sealed.len() + 1024);
        let mut field = |name: &str, value: &str| {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
            );
        };
        field("chat_id", &self.chat_id.to_string());
        field("caption", caption);
        field("disable_notification", "true");
        if let Some(t) = self.thread {
            field("message_thread_id", &t.to_string());
        }
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"document\"; filename=\"plexus.bin\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(sealed);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        (format!("multipart/form-data; boundary={boundary}"), body)
    }
}

/// The `update_id` of the first update in the start of a `getUpdates` answer.
#[doc(hidden)]
pub fn first_update_id(head: &[u8]) -> Option<i64> {
    let text = String::from_utf8_lossy(head);
    let after = &text[text.find("\"update_id\"")? + "\"update_id\"".len()..];
    let digits = after.trim_start().strip_prefix(':')?.trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

fn valid_username(u: &str) -> bool {
    (5..=32).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl MediatorPlugin for Telegram {
    const NAME: &'static str = "telegram";

    fn create(settings: &str) -> Result<Self, PluginError> {
        let s: Settings = serde_yaml::from_str(settings)
            .map_err(|e| config(format!("telegram mediator settings: {e}")))?;
        let token = load_token(&s)?;
        let api = s.api_url.trim_end_matches('/').to_string();
        if !(api.starts_with("https://") || api.starts_with("http://")) {
            return Err(config(
                "api_url must start with https:// (or http:// for a local test server)",
            ));
        }
        if !(1..=50).contains(&s.poll_timeout_secs) {
            return Err(config("poll_timeout_secs must be 1..=50"));
        }
        if s.max_message_bytes == 0 || s.max_message_bytes > MAX_LIMIT {
            return Err(config(format!(
                "max_message_bytes must be 1..={MAX_LIMIT} (the Bot API download limit)"
            )));
        }
        let tls = native_tls::TlsConnector::new().map_err(|e| config(format!("TLS setup: {e}")))?;
        let agent = ureq::AgentBuilder::new()
            .tls_connector(Arc::new(tls))
            .timeout_connect(Duration::from_secs(10))
            .timeout_write(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(s.poll_timeout_secs + 10))
            // A redirect would carry the token in the URL somewhere else.
            .redirects(0)
            .build();
        if api.starts_with("http://") {
            log::warn!("telegram: api_url {api} is plain HTTP; only for local tests");
        }
        Ok(Telegram {
            api,
            token,
            chat_id: s.chat_id,
            peer_bot_id: s.peer_bot_id,
            thread: s.message_thread_id,
            poll_timeout: s.poll_timeout_secs,
            max: s.max_message_bytes,
            agent,
            offset: 0,
            own_username: None,
            pending: VecDeque::new(),
        })
    }

    fn send(&mut self, to: &str, sealed: &[u8]) -> Result<(), PluginError> {
        let peer = to.strip_prefix('@').unwrap_or(to);
        if !valid_username(peer) {
            return Err(PluginError::InvalidArgument(format!(
                "recipient {to:?} is not a bot username (5-32 of A-Z a-z 0-9 _)"
            )));
        }
        if sealed.is_empty() || sealed.len() as u64 > self.max {
            return Err(PluginError::InvalidArgument(format!(
                "message of {} bytes; must be 1..={} (max_message_bytes)",
                sealed.len(),
                self.max
            )));
        }
        let (content_type, body) = self.multipart(&format!("/plexus@{peer}"), sealed);
        let url = self.url("sendDocument");
        self.call("sendDocument", None, &|| {
            self.agent
                .post(&url)
                .set("Content-Type", &content_type)
                .send_bytes(&body)
        })?;
        log::debug!("telegram: sent {} bytes to @{peer}", sealed.len());
        Ok(())
    }

    fn receive(&mut self, timeout: Duration) -> Result<Option<Message>, PluginError> {
        let deadline = Instant::now() + timeout;
        let mut polled = false;
        loop {
            while let Some(p) = self.pending.front() {
                // A download already announced gets some grace beyond the caller's wait.
                match self.download(p, deadline + Duration::from_secs(30)) {
                    Ok(Some(sealed)) => {
                        let p = self.pending.pop_front().expect("front exists");
                        let id = format!("{}:{}", self.chat_id, p.message_id);
                        return Ok(Some(Message {
                            id,
                            from: p.from,
                            sealed,
                        }));
                    }
                    Ok(None) => {
                        self.pending.pop_front();
                    }
                    // Network trouble: keep the document for the next call.
                    Err(e @ PluginError::Unreachable(_)) => return Err(e),
                    // Telegram refuses this file (expired, invalid): it will not get
                    // better, so drop it rather than fail every call from now on.
                    Err(e) => {
                        let p = self.pending.pop_front().expect("front exists");
                        log::warn!("telegram: dropping document {}: {e}", p.message_id);
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if polled && left.is_zero() {
                return Ok(None);
            }
            // Long polls take whole seconds; under a second left, poll without waiting
            // and pause briefly so the loop stays bounded.
            let secs = left.as_secs().min(self.poll_timeout);
            self.poll(secs, deadline)?;
            if polled && secs == 0 && self.pending.is_empty() {
                std::thread::sleep(left.min(Duration::from_millis(200)));
            }
            polled = true;
        }
    }

    fn acknowledge(&mut self, id: &str, outcome: Outcome) -> Result<(), PluginError> {
        // Updates are confirmed to Telegram by the next getUpdates offset; the message
        // stays in the group's history (deleting another bot's message needs admin).
        let ok = id.split_once(':').is_some_and(|(chat, msg)| {
            chat == self.chat_id.to_string() && msg.parse::<i64>().is_ok()
        });
        if !ok {
            return Err(PluginError::InvalidArgument(format!(
                "{id:?} is not a message id of this plugin"
            )));
        }
        log::debug!("telegram: message {id} {outcome:?}");
        Ok(())
    }
}

export_mediator!(Telegram);

#[cfg(test)]
mod tests;
