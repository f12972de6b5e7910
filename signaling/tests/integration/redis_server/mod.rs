//! A real `redis-server` for tests: on a free loopback port, no persistence
//! (so a restart comes back empty, like a crashed cache), killable with
//! SIGKILL and restartable on the same port.

#![allow(dead_code)] // not every helper has a caller yet

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// `None` (with a message) when Debian's redis-server is not installed;
/// `scripts/test.sh` installs it.
pub fn available() -> bool {
    if std::path::Path::new(REDIS_SERVER).exists() {
        return true;
    }
    eprintln!("SKIPPED: {REDIS_SERVER} is missing (apt-get install redis-server)");
    false
}

pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With extra `redis-server` arguments (e.g. `--requirepass`).
    pub async fn start_with(extra_args: &[&str]) -> Self {
        // Ask the kernel for a free port, then hand it to redis.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free loopback port")
            .port();
        let dir = std::env::temp_dir().join(format!(
            "noom-redis-{}-{port}-{:x}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("redis temp dir");
        let mut server = Self {
            port,
            dir,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            child: None,
        };
        server.spawn().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: no goodbye to clients, all data gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server keeps its sockets open and answers nothing, the
    /// way a hung or partitioned server looks to a client.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGKILL, then a fresh empty server on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// One command over a fresh socket, independent of the code under test
    /// (so measuring does not disturb what is measured). Returns a simple
    /// reply's line or a bulk reply's text.
    pub fn raw(&self, args: &[&str]) -> String {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        (&stream).write_all(request.as_bytes()).expect("send");
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).expect("reply");
        let Some(len) = line.strip_prefix('$') else {
            return line.trim_end().to_owned();
        };
        let len: usize = len.trim_end().parse().expect("bulk length");
        let mut body = vec![0u8; len + 2];
        reader.read_exact(&mut body).expect("bulk body");
        body.truncate(len);
        String::from_utf8_lossy(&body).into_owned()
    }

    async fn spawn(&mut self) {
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        // Poll until it answers PING, bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.pings() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pings(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        // A server with a password answers NOAUTH: up all the same.
        let mut buf = [0u8; 16];
        matches!(stream.read(&mut buf),
            Ok(n) if buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(std::process::id() as u64);
    hasher.finish()
}
