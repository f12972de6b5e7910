//! A few Redis commands over a plain socket (RESP2), for the cluster bench:
//! reading `INFO` counters and the cluster's keys from outside, on a
//! connection of our own, so measuring goes through none of the code under
//! test (and counts as a known, tiny number of commands).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

impl Reply {
    /// The text of a simple or bulk reply (`None` for nil and others).
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Simple(s) | Reply::Bulk(Some(s)) => Some(s),
            _ => None,
        }
    }
}

/// Sends one command on a fresh connection to `addr` and reads its reply
/// (2 s deadline). A Redis error reply is an `Err`.
pub fn command(addr: SocketAddr, args: &[&str]) -> Result<Reply> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to redis {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    (&stream).write_all(request.as_bytes())?;
    read_reply(&mut BufReader::new(stream)).with_context(|| format!("redis {}", args.join(" ")))
}

fn read_reply(r: &mut impl BufRead) -> Result<Reply> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| anyhow!("empty reply"))?;
    Ok(match kind {
        "+" => Reply::Simple(rest.to_owned()),
        "-" => bail!("error reply: {rest}"),
        ":" => Reply::Int(rest.parse()?),
        "$" => {
            let len: i64 = rest.parse()?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut body = vec![0u8; len as usize + 2];
            r.read_exact(&mut body)?;
            body.truncate(len as usize);
            Reply::Bulk(Some(String::from_utf8_lossy(&body).into_owned()))
        }
        "*" => {
            let n: i64 = rest.parse()?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Reply::Array(items)
        }
        _ => bail!("unexpected reply line {line:?}"),
    })
}

/// `INFO <section>` as `field -> value` pairs.
pub fn info(addr: SocketAddr, section: &str) -> Result<Vec<(String, String)>> {
    let reply = command(addr, &["INFO", section])?;
    let text = reply.text().ok_or_else(|| anyhow!("INFO: not text"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect())
}

/// `total_commands_processed` from `INFO stats`.
pub fn total_commands(addr: SocketAddr) -> Result<u64> {
    info(addr, "stats")?
        .into_iter()
        .find(|(k, _)| k == "total_commands_processed")
        .ok_or_else(|| anyhow!("INFO stats without total_commands_processed"))?
        .1
        .parse()
        .context("total_commands_processed")
}

/// Calls per command name from `INFO commandstats` (`cmdstat_get:calls=3,...`).
pub fn command_calls(addr: SocketAddr) -> Result<Vec<(String, u64)>> {
    Ok(info(addr, "commandstats")?
        .into_iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("cmdstat_")?;
            let calls = v.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect())
}

/// `HGETALL key` as pairs.
pub fn hgetall(addr: SocketAddr, key: &str) -> Result<Vec<(String, String)>> {
    let Reply::Array(items) = command(addr, &["HGETALL", key])? else {
        bail!("HGETALL {key}: not an array");
    };
    Ok(items
        .chunks(2)
        .filter_map(|pair| match pair {
            [k, v] => Some((k.text()?.to_owned(), v.text()?.to_owned())),
            _ => None,
        })
        .collect())
}

/// `HGET key field`; `None` when absent.
pub fn hget(addr: SocketAddr, key: &str, field: &str) -> Result<Option<String>> {
    Ok(command(addr, &["HGET", key, field])?
        .text()
        .map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        let mut r = "*3\r\n$1\r\na\r\n$-1\r\n:7\r\n".as_bytes();
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Array(vec![
                Reply::Bulk(Some("a".into())),
                Reply::Bulk(None),
                Reply::Int(7)
            ])
        );
        let mut r = "-ERR nope\r\n".as_bytes();
        assert!(read_reply(&mut r).unwrap_err().to_string().contains("nope"));
    }
}
