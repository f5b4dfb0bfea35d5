//! The plugin against a local stand-in for the Bot API (plain HTTP on 127.0.0.1, written
//! here with std only) that speaks the subset the plugin uses.

use super::*;
use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

const TOKEN: &str = "123456:TESTtoken_abc-1";
const CHAT: i64 = -100777;
const PEER: i64 = 4242;
const ME: &str = "AliceBot";

/// A request as the stand-in saw it.
#[derive(Debug, Clone)]
struct Req {
    path: String,
    query: HashMap<String, String>,
    content_type: String,
    body: Vec<u8>,
}

/// A scripted answer: status and JSON body.
type Reply = (u16, String);

#[derive(Default)]
struct State {
    requests: Vec<Req>,
    updates: VecDeque<Reply>,
    send_replies: VecDeque<Reply>,
    /// file_id → (file_size reported by getFile, content served).
    files: HashMap<String, (Option<u64>, Vec<u8>)>,
}

struct BotApi {
    url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl BotApi {
    fn start() -> BotApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(conn, st));
            }
        });
        BotApi {
            url: format!("http://127.0.0.1:{port}"),
            state,
            stop,
            port,
        }
    }

    fn requests(&self, method: &str) -> Vec<Req> {
        let s = self.state.lock().unwrap();
        s.requests
            .iter()
            .filter(|r| r.path.ends_with(method))
            .cloned()
            .collect()
    }

    fn push_updates(&self, status: u16, json: Value) {
        self.state
            .lock()
            .unwrap()
            .updates
            .push_back((status, json.to_string()));
    }

    fn settings(&self, extra: &str) -> String {
        format!(
            "chat_id: {CHAT}\npeer_bot_id: {PEER}\ntoken: \"{TOKEN}\"\nallow_token_in_settings: true\n\
             api_url: {}\npoll_timeout_secs: 1\nmax_message_bytes: 1000\n{extra}",
            self.url
        )
    }
}

impl Drop for BotApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn respond(conn: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

fn serve(mut conn: TcpStream, state: Arc<Mutex<State>>) {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query: HashMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    let req = Req {
        path: path.to_string(),
        query: query.clone(),
        content_type: header("content-type").unwrap_or_default(),
        body: buf[head_end..head_end + length].to_vec(),
    };
    state.lock().unwrap().requests.push(req);

    let json = |conn: &mut TcpStream, status: u16, body: &str| {
        respond(conn, status, "application/json", body.as_bytes())
    };
    if let Some(file) = path.strip_prefix(&format!("/file/bot{TOKEN}/documents/")) {
        let content = state.lock().unwrap().files.get(file).map(|f| f.1.clone());
        match content {
            Some(c) => respond(&mut conn, 200, "application/octet-stream", &c),
            None => json(
                &mut conn,
                404,
                r#"{"ok":false,"error_code":404,"description":"Not Found"}"#,
            ),
        }
        return;
    }
    let Some(method) = path.strip_prefix(&format!("/bot{TOKEN}/")) else {
        json(
            &mut conn,
            401,
            r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#,
        );
        return;
    };
    match method {
        "getMe" => json(
            &mut conn,
            200,
            &format!(r#"{{"ok":true,"result":{{"id":1,"is_bot":true,"username":"{ME}"}}}}"#),
        ),
        "getUpdates" => {
            let scripted = state.lock().unwrap().updates.pop_front();
            match scripted {
                Some((status, body)) => json(&mut conn, status, &body),
                None => {
                    // Long poll: nothing new, answer empty after the timeout (capped).
                    let secs: u64 = query
                        .get("timeout")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0);
                    std::thread::sleep(Duration::from_secs(secs.min(3)));
                    json(&mut conn, 200, r#"{"ok":true,"result":[]}"#);
                }
            }
        }
        "sendDocument" => {
            let scripted = state.lock().unwrap().send_replies.pop_front();
            let (status, body) =
                scripted.unwrap_or((200, r#"{"ok":true,"result":{"message_id":9}}"#.into()));
            json(&mut conn, status, &body);
        }
        "getFile" => {
            let id = query.get("file_id").cloned().unwrap_or_default();
            let size = state.lock().unwrap().files.get(&id).map(|f| f.0);
            match size {
                Some(size) => {
                    let mut r = serde_json::json!({"ok": true, "result": {"file_id": id, "file_path": format!("documents/{id}")}});
                    if let Some(s) = size {
                        r["result"]["file_size"] = s.into();
                    }
                    json(&mut conn, 200, &r.to_string());
                }
                None => json(
                    &mut conn,
                    400,
                    r#"{"ok":false,"error_code":400,"description":"Bad Request: invalid file_id"}"#,
                ),
            }
        }
        _ => json(
            &mut conn,
            404,
            r#"{"ok":false,"error_code":404,"description":"Not Found"}"#,
        ),
    }
}

/// Parts of a multipart/form-data body: name → (filename, content).
fn multipart_parts(req: &Req) -> HashMap<String, (Option<String>, Vec<u8>)> {
    let boundary = req
        .content_type
        .split("boundary=")
        .nth(1)
        .expect("a boundary")
        .to_string();
    let delimiter = format!("--{boundary}");
    let body = &req.body;
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(p) = body[i..]
        .windows(delimiter.len())
        .position(|w| w == delimiter.as_bytes())
    {
        starts.push(i + p);
        i += p + delimiter.len();
    }
    assert!(
        body[*starts.last().unwrap()..].starts_with(format!("{delimiter}--").as_bytes()),
        "closing delimiter"
    );
    let mut parts = HashMap::new();
    for w in starts.windows(2) {
        let part = &body[w[0] + delimiter.len() + 2..w[1] - 2]; // skip CRLF after the delimiter, CRLF before the next
        let split = part.windows(4).position(|x| x == b"\r\n\r\n").unwrap();
        let headers = String::from_utf8_lossy(&part[..split]).to_string();
        let name = headers
            .split("name=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        let filename = headers
            .split("filename=\"")
            .nth(1)
            .map(|f| f.split('"').next().unwrap().to_string());
        parts.insert(name, (filename, part[split + 4..].to_vec()));
    }
    parts
}

fn message(
    update_id: i64,
    message_id: i64,
    chat: i64,
    from: i64,
    caption: &str,
    file: Option<(&str, u64)>,
) -> Value {
    let mut m = serde_json::json!({
        "message_id": message_id,
        "chat": {"id": chat, "type": "supergroup"},
        "from": {"id": from, "is_bot": true, "username": "BobBot"},
        "date": 0,
        "caption": caption,
    });
    if let Some((id, size)) = file {
        m["document"] = serde_json::json!({"file_id": id, "file_unique_id": id, "file_name": "plexus.bin", "file_size": size});
    }
    serde_json::json!({"update_id": update_id, "message": m})
}

#[test]
fn send_is_a_multipart_document_mentioning_the_peer_bot() {
    let api = BotApi::start();
    let mut t = Telegram::create(&api.settings("message_thread_id: 5")).unwrap();
    // Binary content containing CRLF and dashes, as sealed bytes can.
    let sealed: Vec<u8> = (0..=255u8).chain(b"\r\n--x\r\n".iter().copied()).collect();
    t.send("@BobBot", &sealed).unwrap();
    let reqs = api.requests("sendDocument");
    assert_eq!(reqs.len(), 1);
    let parts = multipart_parts(&reqs[0]);
    assert_eq!(parts["chat_id"].1, CHAT.to_string().as_bytes());
    assert_eq!(parts["caption"].1, b"/plexus@BobBot");
    assert_eq!(parts["message_thread_id"].1, b"5");
    assert_eq!(parts["document"].0.as_deref(), Some("plexus.bin"));
    assert_eq!(parts["document"].1, sealed);
    assert!(matches!(
        t.send("bad name!", b"x"),
        Err(PluginError::InvalidArgument(_))
    ));
    assert!(matches!(
        t.send("BobBot", &[0; 1001]),
        Err(PluginError::InvalidArgument(_))
    ));
}

#[test]
fn receive_takes_only_the_peer_bots_documents_addressed_to_us() {
    let api = BotApi::start();
    {
        let mut s = api.state.lock().unwrap();
        s.files.insert("good".into(), (Some(5), b"hello".to_vec()));
        s.files
            .insert("stranger".into(), (Some(3), b"bad".to_vec()));
    }
    api.push_updates(
        200,
        serde_json::json!({"ok": true, "result": [
            message(10, 1, CHAT, 999, "/plexus@AliceBot", Some(("stranger", 3))),
            message(11, 2, -1, PEER, "/plexus@AliceBot", Some(("stranger", 3))),
            message(12, 3, CHAT, PEER, "/plexus@CarolBot", Some(("stranger", 3))),
            message(13, 4, CHAT, PEER, "/plexus@AliceBot", None),
            {"update_id": 14, "edited_message": {}},
            message(15, 5, CHAT, PEER, "/plexus@alicebot", Some(("good", 5))),
        ]}),
    );
    let mut t = Telegram::create(&api.settings("")).unwrap();
    let m = t
        .receive(Duration::from_secs(5))
        .unwrap()
        .expect("the peer's document");
    assert_eq!(
        (m.id.as_str(), m.from.as_str(), m.sealed.as_slice()),
        ("-100777:5", "@BobBot", &b"hello"[..])
    );
    t.acknowledge(&m.id, Outcome::Handled).unwrap();
    assert!(t.acknowledge("elsewhere:1", Outcome::Handled).is_err());
    let got_files: Vec<String> = api
        .requests("getFile")
        .iter()
        .map(|r| r.query["file_id"].clone())
        .collect();
    assert_eq!(got_files, vec!["good"], "nothing else downloaded");
    // The next poll confirms everything seen.
    assert!(t.receive(Duration::from_secs(1)).unwrap().is_none());
    let polls = api.requests("getUpdates");
    assert_eq!(polls[0].query["offset"], "0");
    assert_eq!(polls[0].query["allowed_updates"], "[\"message\"]");
    assert_eq!(polls[1].query["offset"], "16");
}

#[test]
fn long_poll_timeout_returns_none() {
    let api = BotApi::start();
    let mut t = Telegram::create(&api.settings("")).unwrap();
    assert!(t.receive(Duration::from_millis(1500)).unwrap().is_none());
    let polls = api.requests("getUpdates");
    assert!(!polls.is_empty());
    assert!(
        polls
            .iter()
            .all(|p| p.query["timeout"].parse::<u64>().unwrap() <= 1),
        "{polls:?}"
    );
}

#[test]
fn rate_limit_429_is_waited_out_when_short_and_reported_when_long() {
    let api = BotApi::start();
    let limited = |secs: u64| {
        (
            429,
            serde_json::json!({"ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {secs}"),
                               "parameters": {"retry_after": secs}})
            .to_string(),
        )
    };
    api.state.lock().unwrap().send_replies.push_back(limited(1));
    let mut t = Telegram::create(&api.settings("")).unwrap();
    t.send("BobBot", b"x").unwrap();
    assert_eq!(
        api.requests("sendDocument").len(),
        2,
        "retried once after retry_after"
    );
    api.state
        .lock()
        .unwrap()
        .send_replies
        .push_back(limited(3600));
    match t.send("BobBot", b"x") {
        Err(PluginError::Unreachable(m)) => assert!(m.contains("retry after 3600"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        api.requests("sendDocument").len(),
        3,
        "no retry for an hour-long limit"
    );
    // getUpdates is retried the same way.
    let (s, b) = limited(1);
    api.state.lock().unwrap().updates.push_back((s, b));
    assert!(t.receive(Duration::from_secs(4)).unwrap().is_none());
    assert!(api.requests("getUpdates").len() >= 2);
}

#[test]
fn oversized_documents_are_skipped_and_the_next_one_taken() {
    let api = BotApi::start();
    {
        let mut s = api.state.lock().unwrap();
        s.files.insert("huge".into(), (Some(5000), vec![1; 5000]));
        s.files.insert("liar".into(), (None, vec![2; 5000]));
        s.files.insert("ok".into(), (Some(2), b"ok".to_vec()));
    }
    // "gone" is unknown to getFile (a 400): dropped, not retried forever.
    api.push_updates(
        200,
        serde_json::json!({"ok": true, "result": [
            message(20, 1, CHAT, PEER, "/plexus@AliceBot", Some(("huge", 5000))),
            message(21, 2, CHAT, PEER, "/plexus@AliceBot", Some(("liar", 10))),
            message(22, 3, CHAT, PEER, "/plexus@AliceBot", Some(("gone", 10))),
            message(23, 4, CHAT, PEER, "/plexus@AliceBot", Some(("ok", 2))),
        ]}),
    );
    let mut t = Telegram::create(&api.settings("")).unwrap();
    let m = t.receive(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(m.sealed, b"ok");
    let fetched: Vec<String> = api
        .requests("getFile")
        .iter()
        .map(|r| r.query["file_id"].clone())
        .collect();
    assert_eq!(
        fetched,
        vec!["liar", "gone", "ok"],
        "the announced-oversized one is never fetched"
    );
}

#[test]
fn bad_token_is_an_auth_error_without_the_token_in_it() {
    let api = BotApi::start();
    let settings = api.settings("").replace(TOKEN, "999:WRONGsecret");
    let mut t = Telegram::create(&settings).unwrap();
    match t.send("BobBot", b"x") {
        Err(PluginError::Auth(m)) => assert!(
            m.contains("refused the bot token") && !m.contains("WRONGsecret"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn network_errors_end_in_unreachable_after_bounded_retries() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = format!(
        "chat_id: 1\npeer_bot_id: 2\ntoken: \"{TOKEN}\"\nallow_token_in_settings: true\napi_url: http://127.0.0.1:{port}"
    );
    let mut t = Telegram::create(&settings).unwrap();
    match t.send("BobBot", b"x") {
        Err(PluginError::Unreachable(m)) => assert!(!m.contains("TESTtoken"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn token_sources_and_settings_are_checked() {
    let api = BotApi::start();
    let base = format!("chat_id: 1\npeer_bot_id: 2\napi_url: {}\n", api.url);
    // Plaintext token only when explicitly allowed.
    let e = Telegram::create(&format!("{base}token: \"{TOKEN}\"")).unwrap_err();
    assert!(e.message().contains("allow_token_in_settings"), "{e}");
    // From an environment variable (a name unique to this test).
    std::env::set_var("PLEXUS_TEST_TG_TOKEN_7", TOKEN);
    let mut t = Telegram::create(&format!("{base}token_env: PLEXUS_TEST_TG_TOKEN_7")).unwrap();
    t.send("BobBot", b"x").unwrap();
    let e = Telegram::create(&format!("{base}token_env: PLEXUS_TEST_TG_TOKEN_UNSET")).unwrap_err();
    assert!(e.message().contains("PLEXUS_TEST_TG_TOKEN_UNSET"), "{e}");
    // From a file, which must not be readable by others.
    let dir = std::env::temp_dir().join(format!("plexus-plugins-tg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = Telegram::create(&format!("{base}token_file: {}", file.display())).unwrap_err();
    assert!(e.message().contains("chmod 600"), "{e}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    Telegram::create(&format!("{base}token_file: {}", file.display())).unwrap();
    std::fs::write(&file, "not a token").unwrap();
    let e = Telegram::create(&format!("{base}token_file: {}", file.display())).unwrap_err();
    assert!(e.message().contains("does not look like"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    for (extra, needle) in [
        ("poll_timeout_secs: 99", "poll_timeout_secs"),
        ("max_message_bytes: 0", "max_message_bytes"),
        ("colour: red", "unknown field"),
    ] {
        let e = Telegram::create(&api.settings(extra)).unwrap_err();
        assert!(
            matches!(&e, PluginError::Config(m) if m.contains(needle)),
            "{extra}: {e}"
        );
    }
    let e = Telegram::create(&api.settings("").replace(&api.url, "ftp://x")).unwrap_err();
    assert!(e.message().contains("api_url"), "{e}");
}

#[test]
fn token_never_shows_in_debug() {
    let api = BotApi::start();
    let t = Telegram::create(&api.settings("")).unwrap();
    assert!(!format!("{t:?} {:?}", t.token).contains("TESTtoken"));
}

#[test]
fn an_update_too_large_to_read_is_skipped_by_its_id() {
    let api = BotApi::start();
    api.state
        .lock()
        .unwrap()
        .files
        .insert("ok".into(), (Some(2), b"ok".to_vec()));
    // Written by hand: Telegram puts update_id first (serde_json would sort the keys).
    let huge = format!(
        r#"{{"update_id":30,"message":{{"message_id":1,"chat":{{"id":{CHAT}}},"from":{{"id":{PEER}}},"text":"{}"}}}}"#,
        "x".repeat(MAX_JSON as usize + 10)
    );
    let next = message(31, 2, CHAT, PEER, "/plexus@AliceBot", Some(("ok", 2)));
    let big = format!(r#"{{"ok":true,"result":[{huge},{next}]}}"#);
    let alone = format!(r#"{{"ok":true,"result":[{huge}]}}"#);
    {
        let mut st = api.state.lock().unwrap();
        st.updates.push_back((200, big));
        st.updates.push_back((200, alone));
    }
    api.push_updates(
        200,
        serde_json::json!({"ok": true, "result": [
            message(31, 2, CHAT, PEER, "/plexus@AliceBot", Some(("ok", 2))),
        ]}),
    );
    let mut t = Telegram::create(&api.settings("")).unwrap();
    let m = t
        .receive(Duration::from_secs(5))
        .unwrap()
        .expect("the update after the huge one");
    assert_eq!(m.sealed, b"ok");
    let polls = api.requests("getUpdates");
    assert_eq!(polls[1].query["limit"], "1", "retried one update at a time");
    assert_eq!(
        polls[2].query["offset"], "31",
        "the huge update was skipped by id"
    );
    assert_eq!(
        first_update_id(br#"{"ok":true,"result":[{"update_id": 77,"#),
        Some(77)
    );
    assert_eq!(first_update_id(br#"{"ok":true,"result":[{"upd"#), None);
}

#[test]
fn the_largest_update_id_does_not_overflow_the_offset() {
    let api = BotApi::start();
    let mut t = Telegram::create(&api.settings("")).unwrap();
    api.push_updates(
        200,
        serde_json::json!({"ok": true, "result": [{"update_id": i64::MAX, "edited_message": {}}]}),
    );
    // Before: `id + 1` panicked here in a debug build (wrapped to i64::MIN in release).
    assert!(t.receive(Duration::from_millis(1500)).unwrap().is_none());
    let polls = api.requests("getUpdates");
    assert!(polls.len() >= 2, "{polls:?}");
    assert_eq!(
        polls.last().unwrap().query["offset"],
        i64::MAX.to_string(),
        "the offset stays at the largest id"
    );
}
