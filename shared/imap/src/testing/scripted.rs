//! A scripted IMAP server for tests (feature `testing`): plays what a real server does per
//! the IMAP RFCs (3501, 7162) and the faults that the large providers are documented or
//! reported to show, which no lenient local Dovecot produces: folders that refuse `STATUS`,
//! NIL or short bodies, a part from another offset, a huge answer that is not IMAP, one
//! message's data split over several FETCH responses, a slow link, a server that goes away,
//! and CONDSTORE without QRESYNC, where an expunge need not move HIGHESTMODSEQ (RFC 7162
//! §3.1.2 asks it of QRESYNC servers only).
//!
//! It speaks plaintext on loopback, one task per connection, over a shared mailbox that a
//! test changes between runs ([`ScriptedServer::world`]) and whose behaviour it sets
//! ([`Behaviour`]). It is meant to grow into provider personalities (Gmail, Yahoo,
//! Outlook.com, Courier-style servers); every fault is a switch, off by default.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message on the server.
#[derive(Clone, Debug)]
pub struct ScriptedMessage {
    pub uid: u32,
    pub flags: Vec<String>,
    /// IMAP `date-time`, e.g. `02-Jan-2024 11:00:05 +0000`.
    pub internal_date: String,
    pub body: Vec<u8>,
    pub modseq: u64,
}

/// One folder on the server.
#[derive(Clone, Debug)]
pub struct ScriptedFolder {
    pub name: String,
    /// LIST attributes, e.g. `\HasNoChildren`, `\Noselect`, `\Sent`.
    pub attributes: Vec<String>,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    pub messages: Vec<ScriptedMessage>,
    /// Expunged UIDs with the mod-sequence of their expunge (for QRESYNC's VANISHED).
    pub expunged: Vec<(u32, u64)>,
}

impl ScriptedFolder {
    pub fn new(name: &str, uid_validity: u32) -> Self {
        ScriptedFolder {
            name: name.to_string(),
            attributes: vec!["\\HasNoChildren".into()],
            uid_validity,
            uid_next: 1,
            highest_modseq: 1,
            messages: Vec::new(),
            expunged: Vec::new(),
        }
    }
}

/// A message fault, played for the first `times` fetches of the body (`u32::MAX`: always).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFault {
    /// `BODY[]<0> NIL`: a server that cannot read the message (seen on Exchange and
    /// Yahoo for damaged items).
    Nil,
    /// The first half of the body only, as if the message were that long.
    Short,
    /// The part claims to start one byte further than asked.
    WrongOffset,
    /// A 1 MiB literal of the message's bytes followed by bytes that are not IMAP: the
    /// client cannot parse the response.
    Garbage,
}

/// What the server does besides answering correctly.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Capabilities after login, besides `IMAP4rev1` (e.g. `CONDSTORE`, `QRESYNC`).
    pub capabilities: Vec<String>,
    /// Whether an expunge moves HIGHESTMODSEQ; QRESYNC servers must, CONDSTORE-only ones
    /// need not.
    pub expunge_moves_modseq: bool,
    /// Folders whose `STATUS` is answered `NO`.
    pub refuse_status: BTreeSet<String>,
    /// Folders whose `SELECT`/`EXAMINE` is answered `NO`.
    pub refuse_select: BTreeSet<String>,
    /// Body faults by (folder, UID), with how many more fetches they apply to.
    pub body_faults: BTreeMap<(String, u32), (BodyFault, u32)>,
    /// Each message's metadata in two FETCH responses, the first repeated after the second.
    pub split_fetch: bool,
    /// The link's speed from server to client, bytes per second.
    pub bytes_per_sec: Option<u64>,
    /// After this many body bytes in all, the connection is cut and the server refuses
    /// every later connection until [`ScriptedServer::revive`].
    pub down_after_body_bytes: Option<u64>,
}

/// The mailbox and the behaviour, shared with the test.
#[derive(Debug, Default)]
pub struct World {
    pub folders: Vec<ScriptedFolder>,
    pub behaviour: Behaviour,
    pub password: String,
    down: bool,
}

impl World {
    pub fn folder(&mut self, name: &str) -> &mut ScriptedFolder {
        self.folders
            .iter_mut()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no folder {name}"))
    }

    /// Adds a message at the folder's next UID; returns the UID.
    pub fn add(&mut self, folder: &str, body: Vec<u8>, flags: &[&str]) -> u32 {
        let f = self.folder(folder);
        let uid = f.uid_next;
        f.uid_next += 1;
        f.highest_modseq += 1;
        let modseq = f.highest_modseq;
        f.messages.push(ScriptedMessage {
            uid,
            flags: flags.iter().map(|s| s.to_string()).collect(),
            internal_date: "02-Jan-2024 11:00:05 +0000".into(),
            body,
            modseq,
        });
        uid
    }

    /// Expunges messages; HIGHESTMODSEQ moves only if the behaviour says so.
    pub fn expunge(&mut self, folder: &str, uids: &[u32]) {
        let moves = self.behaviour.expunge_moves_modseq;
        let f = self.folder(folder);
        let before = f.messages.len();
        f.messages.retain(|m| !uids.contains(&m.uid));
        if f.messages.len() != before && moves {
            f.highest_modseq += 1;
            let ms = f.highest_modseq;
            f.expunged.extend(uids.iter().map(|u| (*u, ms)));
        }
    }
}

/// What the server saw.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU32,
    /// The longest command line received, in bytes (literals not counted).
    pub longest_line: AtomicUsize,
    /// Body bytes sent (literal contents of `BODY[]` responses).
    pub body_bytes: AtomicU64,
    /// Commands received, by verb (`UID FETCH`, `STATUS`, …).
    pub commands: Mutex<Vec<String>>,
    /// Commands received as sent (the first 200 bytes of each, literals left out).
    pub lines: Mutex<Vec<String>>,
}

impl Stats {
    pub fn count(&self, verb: &str) -> usize {
        lock(&self.commands).iter().filter(|c| *c == verb).count()
    }

    /// Commands whose text contains every one of `words`.
    pub fn count_lines(&self, words: &[&str]) -> usize {
        lock(&self.lines)
            .iter()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .count()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running scripted server.
pub struct ScriptedServer {
    pub port: u16,
    world: Arc<Mutex<World>>,
    pub stats: Arc<Stats>,
}

impl ScriptedServer {
    /// Starts a server on loopback with `folders` (INBOX first is usual) and `password`.
    pub async fn start(folders: Vec<ScriptedFolder>, password: &str) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let world = Arc::new(Mutex::new(World {
            folders,
            password: password.to_string(),
            ..World::default()
        }));
        let stats = Arc::new(Stats::default());
        let (w, st) = (world.clone(), stats.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                st.connections.fetch_add(1, Ordering::SeqCst);
                let (w, st) = (w.clone(), st.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, w, st).await;
                });
            }
        });
        ScriptedServer { port, world, stats }
    }

    /// The mailbox and behaviour, to change between (or during) runs.
    pub fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// Lets connections in again after `down_after_body_bytes` took the server down.
    pub fn revive(&self) {
        let mut w = self.world();
        w.down = false;
        w.behaviour.down_after_body_bytes = None;
    }
}

/// The connection's writer, slowed to the link's speed when the behaviour says so.
struct Out {
    sock: tokio::net::tcp::OwnedWriteHalf,
    rate: Option<u64>,
}

impl Out {
    async fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self.rate {
            None => self.sock.write_all(b).await,
            Some(rate) => {
                for chunk in b.chunks(8 * 1024) {
                    self.sock.write_all(chunk).await?;
                    let secs = chunk.len() as f64 / rate.max(1) as f64;
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                }
                Ok(())
            }
        }
    }

    async fn line(&mut self, s: &str) -> std::io::Result<()> {
        self.send(format!("{s}\r\n").as_bytes()).await
    }
}

/// Splits a command's arguments: atoms, quoted strings (unquoted) and parenthesised lists
/// (kept whole, brackets and all).
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    while let Some(&c) = it.peek() {
        if c == ' ' {
            it.next();
        } else if c == '"' {
            it.next();
            let mut t = String::new();
            while let Some(c) = it.next() {
                match c {
                    '\\' => t.extend(it.next()),
                    '"' => break,
                    c => t.push(c),
                }
            }
            out.push(t);
        } else if c == '(' {
            let mut depth = 0;
            let mut t = String::new();
            for c in it.by_ref() {
                t.push(c);
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            out.push(t);
        } else {
            let mut t = String::new();
            let mut depth = 0;
            while let Some(&c) = it.peek() {
                if c == ' ' && depth == 0 {
                    break;
                }
                match c {
                    '[' | '(' => depth += 1,
                    ']' | ')' => depth -= 1,
                    _ => {}
                }
                t.push(c);
                it.next();
            }
            out.push(t);
        }
    }
    out
}

/// The UIDs of `set` (`1:*`, `3,5:7`) among `uids` (sorted).
fn in_set(set: &str, uids: &[u32]) -> Vec<u32> {
    let max = uids.last().copied().unwrap_or(0);
    let num = |s: &str| {
        if s == "*" {
            max
        } else {
            s.parse().unwrap_or(0)
        }
    };
    let mut out = BTreeSet::new();
    for piece in set.split(',') {
        let (a, b) = match piece.split_once(':') {
            Some((a, b)) => (num(a), num(b)),
            None => (num(piece), num(piece)),
        };
        let (a, b) = (a.min(b), a.max(b));
        out.extend(uids.iter().copied().filter(|u| *u >= a && *u <= b));
    }
    out.into_iter().collect()
}

async fn serve(
    sock: TcpStream,
    world: Arc<Mutex<World>>,
    stats: Arc<Stats>,
) -> std::io::Result<()> {
    let (r, w) = sock.into_split();
    let mut input = BufReader::new(r);
    let (down, rate) = {
        let w = lock(&world);
        (w.down, w.behaviour.bytes_per_sec)
    };
    let mut out = Out { sock: w, rate };
    if down {
        return Ok(());
    }
    out.line("* OK scripted IMAP server ready").await?;
    let mut selected: Option<String> = None;
    let mut enabled = false;
    loop {
        let mut line = Vec::new();
        if input.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        stats.longest_line.fetch_max(line.len(), Ordering::SeqCst);
        // A literal in the command: take it in and read the rest of the line.
        while let Some(n) = literal_len(&line) {
            if !line.ends_with(b"+}\r\n") {
                out.line("+ go ahead").await?;
            }
            let mut lit = vec![0u8; n];
            input.read_exact(&mut lit).await?;
            let mut rest = Vec::new();
            input.read_until(b'\n', &mut rest).await?;
            line.extend_from_slice(&rest);
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let Some((tag, rest)) = text.split_once(' ') else {
            out.line("* BAD no tag").await?;
            continue;
        };
        let tag = tag.to_string();
        let (verb, args) = match rest.split_once(' ') {
            Some((v, a)) if v.eq_ignore_ascii_case("UID") => {
                let (v2, a2) = a.split_once(' ').unwrap_or((a, ""));
                (format!("UID {}", v2.to_ascii_uppercase()), a2.to_string())
            }
            Some((v, a)) => (v.to_ascii_uppercase(), a.to_string()),
            None => (rest.to_ascii_uppercase(), String::new()),
        };
        lock(&stats.commands).push(verb.clone());
        let shown: String = rest.chars().take(200).collect();
        lock(&stats.lines).push(shown);
        let args = tokens(&args);
        match verb.as_str() {
            "CAPABILITY" => {
                let caps = lock(&world).behaviour.capabilities.join(" ");
                out.line(&format!("* CAPABILITY IMAP4rev1 AUTH=PLAIN {caps}"))
                    .await?;
                out.line(&format!("{tag} OK done")).await?;
            }
            "LOGIN" => {
                let ok = args.get(1).is_some_and(|p| *p == lock(&world).password);
                if ok {
                    out.line(&format!("{tag} OK logged in")).await?;
                } else {
                    out.line(&format!(
                        "{tag} NO [AUTHENTICATIONFAILED] Invalid credentials"
                    ))
                    .await?;
                }
            }
            "ENABLE" => {
                enabled = true;
                out.line(&format!("* ENABLED {}", args.join(" "))).await?;
                out.line(&format!("{tag} OK enabled")).await?;
            }
            "NOOP" => out.line(&format!("{tag} OK done")).await?,
            "LOGOUT" => {
                out.line("* BYE logging out").await?;
                out.line(&format!("{tag} OK done")).await?;
                return Ok(());
            }
            "LIST" => {
                let lines: Vec<String> = lock(&world)
                    .folders
                    .iter()
                    .map(|f| format!("* LIST ({}) \"/\" \"{}\"", f.attributes.join(" "), f.name))
                    .collect();
                for l in lines {
                    out.line(&l).await?;
                }
                out.line(&format!("{tag} OK done")).await?;
            }
            "STATUS" => {
                let name = args.first().cloned().unwrap_or_default();
                let reply = {
                    let mut w = lock(&world);
                    let condstore = has_condstore(&w.behaviour);
                    if w.behaviour.refuse_status.contains(&name) {
                        None
                    } else {
                        w.folders.iter_mut().find(|f| f.name == name).map(|f| {
                            let mut s = format!(
                                "* STATUS \"{}\" (MESSAGES {} UIDNEXT {} UIDVALIDITY {}",
                                f.name,
                                f.messages.len(),
                                f.uid_next,
                                f.uid_validity
                            );
                            if condstore {
                                s.push_str(&format!(" HIGHESTMODSEQ {}", f.highest_modseq));
                            }
                            s.push(')');
                            s
                        })
                    }
                };
                match reply {
                    Some(l) => {
                        out.line(&l).await?;
                        out.line(&format!("{tag} OK done")).await?;
                    }
                    None => {
                        out.line(&format!(
                            "{tag} NO [SERVERBUG] STATUS failed for this mailbox"
                        ))
                        .await?
                    }
                }
            }
            "EXAMINE" | "SELECT" => {
                let name = args.first().cloned().unwrap_or_default();
                let lines = {
                    let w = lock(&world);
                    let condstore = has_condstore(&w.behaviour);
                    if w.behaviour.refuse_select.contains(&name) {
                        None
                    } else {
                        w.folders.iter().find(|f| f.name == name).map(|f| {
                            let mut l = vec![
                                "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)".into(),
                                format!("* {} EXISTS", f.messages.len()),
                                format!("* OK [UIDVALIDITY {}] UIDs valid", f.uid_validity),
                                format!("* OK [UIDNEXT {}] Predicted next UID", f.uid_next),
                            ];
                            if condstore {
                                l.push(format!(
                                    "* OK [HIGHESTMODSEQ {}] Highest",
                                    f.highest_modseq
                                ));
                            }
                            l
                        })
                    }
                };
                match lines {
                    Some(ls) => {
                        for l in ls {
                            out.line(&l).await?;
                        }
                        selected = Some(name);
                        out.line(&format!("{tag} OK [READ-ONLY] done")).await?;
                    }
                    None => {
                        selected = None;
                        out.line(&format!("{tag} NO [UNAVAILABLE] mailbox cannot be opened"))
                            .await?
                    }
                }
            }
            "UID SEARCH" => {
                let Some(name) = &selected else {
                    out.line(&format!("{tag} BAD no mailbox selected")).await?;
                    continue;
                };
                let uids: Vec<String> = lock(&world)
                    .folder(name)
                    .messages
                    .iter()
                    .map(|m| m.uid.to_string())
                    .collect();
                out.line(format!("* SEARCH {}", uids.join(" ")).trim_end())
                    .await?;
                out.line(&format!("{tag} OK done")).await?;
            }
            "UID FETCH" => {
                let Some(name) = selected.clone() else {
                    out.line(&format!("{tag} BAD no mailbox selected")).await?;
                    continue;
                };
                if !uid_fetch(&mut out, &world, &stats, &name, &args, enabled).await? {
                    // The server went away mid-response.
                    return Ok(());
                }
                out.line(&format!("{tag} OK done")).await?;
            }
            _ => out.line(&format!("{tag} BAD unknown command")).await?,
        }
    }
}

fn has_condstore(b: &Behaviour) -> bool {
    b.capabilities
        .iter()
        .any(|c| c.eq_ignore_ascii_case("CONDSTORE") || c.eq_ignore_ascii_case("QRESYNC"))
}

fn literal_len(line: &[u8]) -> Option<usize> {
    let s = std::str::from_utf8(line).ok()?.trim_end();
    let inner = s.strip_suffix('}')?;
    let open = inner.rfind('{')?;
    inner[open + 1..].trim_end_matches('+').parse().ok()
}

/// Answers a UID FETCH of metadata or of a body part; `false` when the server went down.
async fn uid_fetch(
    out: &mut Out,
    world: &Arc<Mutex<World>>,
    stats: &Stats,
    folder: &str,
    args: &[String],
    qresync_enabled: bool,
) -> std::io::Result<bool> {
    let set = args.first().cloned().unwrap_or_default();
    let items = args
        .get(1)
        .cloned()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let modifiers = args
        .get(2)
        .cloned()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let changed_since: Option<u64> = modifiers
        .split_once("CHANGEDSINCE ")
        .and_then(|(_, r)| r.split([' ', ')']).next()?.parse().ok());
    let vanished = modifiers.contains("VANISHED") && qresync_enabled;
    // Snapshot what is needed under the lock; write without it.
    let (msgs, split, condstore, expunged) = {
        let w = lock(world);
        let split = w.behaviour.split_fetch;
        let condstore = has_condstore(&w.behaviour);
        let f = w.folders.iter().find(|f| f.name == folder).cloned();
        let Some(f) = f else { return Ok(true) };
        let uids: Vec<u32> = f.messages.iter().map(|m| m.uid).collect();
        let chosen: BTreeSet<u32> = in_set(&set, &uids).into_iter().collect();
        let msgs: Vec<(u32, ScriptedMessage)> = f
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| chosen.contains(&m.uid))
            .filter(|(_, m)| changed_since.is_none_or(|c| m.modseq > c))
            .map(|(i, m)| (i as u32 + 1, m.clone()))
            .collect();
        // Expunges within the set asked for (RFC 7162 §3.2.6), `*` being the highest UID
        // the folder had.
        let expunged: Vec<u32> = match changed_since {
            Some(c) if vanished => {
                let mut all: Vec<u32> = uids.to_vec();
                all.extend(f.expunged.iter().map(|(u, _)| *u));
                all.sort_unstable();
                let within: BTreeSet<u32> = in_set(&set, &all).into_iter().collect();
                f.expunged
                    .iter()
                    .filter(|(u, ms)| *ms > c && within.contains(u))
                    .map(|(u, _)| *u)
                    .collect()
            }
            _ => Vec::new(),
        };
        (msgs, split, condstore, expunged)
    };
    if !expunged.is_empty() {
        let list: Vec<String> = expunged.iter().map(|u| u.to_string()).collect();
        out.line(&format!("* VANISHED (EARLIER) {}", list.join(",")))
            .await?;
    }
    let body = items
        .find("BODY.PEEK[]<")
        .map(|i| &items[i + "BODY.PEEK[]<".len()..])
        .and_then(|r| r.split_once('>'))
        .and_then(|(r, _)| r.split_once('.'))
        .and_then(|(o, n)| Some((o.parse::<usize>().ok()?, n.parse::<usize>().ok()?)));
    for (seq, m) in msgs {
        match body {
            None => {
                let mut a = format!("UID {} FLAGS ({})", m.uid, m.flags.join(" "));
                let mut b = format!(
                    "UID {} INTERNALDATE \"{}\" RFC822.SIZE {}",
                    m.uid,
                    m.internal_date,
                    m.body.len()
                );
                if condstore {
                    b.push_str(&format!(" MODSEQ ({})", m.modseq));
                }
                if split {
                    out.line(&format!("* {seq} FETCH ({a})")).await?;
                    out.line(&format!("* {seq} FETCH ({b})")).await?;
                    out.line(&format!("* {seq} FETCH ({a})")).await?;
                } else {
                    a.push(' ');
                    a.push_str(b.trim_start_matches(&format!("UID {} ", m.uid)));
                    out.line(&format!("* {seq} FETCH ({a})")).await?;
                }
            }
            Some((offset, len)) => {
                let fault = {
                    let mut w = lock(world);
                    match w
                        .behaviour
                        .body_faults
                        .get_mut(&(folder.to_string(), m.uid))
                    {
                        Some((f, n)) if *n > 0 => {
                            if *n != u32::MAX {
                                *n -= 1;
                            }
                            Some(*f)
                        }
                        _ => None,
                    }
                };
                let end = (offset + len).min(m.body.len());
                let part = &m.body[offset.min(end)..end];
                let head = format!("* {seq} FETCH (UID {} BODY[]<", m.uid);
                match fault {
                    Some(BodyFault::Nil) => {
                        out.line(&format!("{head}{offset}> NIL)")).await?;
                    }
                    Some(BodyFault::Short) => {
                        let half = &part[..part.len() / 2];
                        if !send_literal(out, world, stats, &format!("{head}{offset}>"), half)
                            .await?
                        {
                            return Ok(false);
                        }
                        out.line(")").await?;
                    }
                    Some(BodyFault::WrongOffset) => {
                        let h = format!("{head}{}>", offset + 1);
                        if !send_literal(out, world, stats, &h, part).await? {
                            return Ok(false);
                        }
                        out.line(")").await?;
                    }
                    Some(BodyFault::Garbage) => {
                        let mut junk = Vec::with_capacity(1 << 20);
                        while junk.len() < 1 << 20 {
                            junk.extend_from_slice(&m.body);
                        }
                        junk.truncate(1 << 20);
                        out.send(format!("{head}{offset}> {{{}}}\r\n", junk.len()).as_bytes())
                            .await?;
                        out.send(&junk).await?;
                        // Not `)`: what follows the literal is not IMAP.
                        out.send(b" \x01\x02]]] {{{ garbage\r\n").await?;
                    }
                    None => {
                        if !send_literal(out, world, stats, &format!("{head}{offset}>"), part)
                            .await?
                        {
                            return Ok(false);
                        }
                        out.line(")").await?;
                    }
                }
            }
        }
    }
    Ok(true)
}

/// Sends `head {n}` and the literal, counting body bytes; cuts the connection (and takes
/// the server down) when the behaviour's byte budget runs out. `false` when it did.
async fn send_literal(
    out: &mut Out,
    world: &Arc<Mutex<World>>,
    stats: &Stats,
    head: &str,
    data: &[u8],
) -> std::io::Result<bool> {
    let sent = stats.body_bytes.load(Ordering::SeqCst);
    let limit = lock(world).behaviour.down_after_body_bytes;
    out.send(format!("{head} {{{}}}\r\n", data.len()).as_bytes())
        .await?;
    if let Some(limit) = limit {
        if sent + data.len() as u64 > limit {
            let n = limit.saturating_sub(sent) as usize;
            out.send(&data[..n]).await?;
            stats.body_bytes.fetch_add(n as u64, Ordering::SeqCst);
            lock(world).down = true;
            return Ok(false);
        }
    }
    out.send(data).await?;
    stats
        .body_bytes
        .fetch_add(data.len() as u64, Ordering::SeqCst);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_as_imap_reads_them() {
        assert_eq!(
            tokens(r#""a \"b\"" (X (Y)) BODY.PEEK[]<0.10> 1:*"#),
            vec!["a \"b\"", "(X (Y))", "BODY.PEEK[]<0.10>", "1:*"]
        );
        assert_eq!(in_set("1:*", &[2, 5, 9]), vec![2, 5, 9]);
        assert_eq!(in_set("3,9:*", &[2, 3, 5, 9]), vec![3, 9]);
        assert_eq!(literal_len(b"A1 APPEND x {12}\r\n"), Some(12));
        assert_eq!(literal_len(b"A1 APPEND x {12+}\r\n"), Some(12));
        assert_eq!(literal_len(b"A1 NOOP\r\n"), None);
    }
}
