//! The record file (`tracer record -o FILE`, read by `tracer report FILE`): everything the
//! collector consumed, in order — raw kernel events, the answers it got from the host (sock_diag,
//! /proc, clocks, counters) and batch/tick marks — so a report replays the exact same state.
//!
//! Layout: magic `UTRACER\0`, version (u32 LE), then records `[tag u8][len u32 LE][payload]`:
//! 1 = raw event, 2 = answer (JSON), 3 = mark (JSON), 4 = meta (JSON, first). A complete file ends
//! with an `end` mark; anything else is reported as truncated or corrupt, never a panic.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"UTRACER\0";
const VERSION: u32 = 1;
const MAX_RECORD: usize = 16 << 20;

pub const TAG_EVENT: u8 = 1;
pub const TAG_ANSWER: u8 = 2;
pub const TAG_MARK: u8 = 3;
pub const TAG_META: u8 = 4;

/// What a recording says about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub tracer_version: String,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC at the start, ns.
    pub timebase_offset_ns: i64,
    pub filter: String,
    pub probes: Vec<crate::kernel::load::ProbeStatus>,
    pub nginx: Option<crate::nginx::Discovery>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    /// A ring-buffer batch was handled.
    Batch,
    /// The periodic summary ran.
    Tick,
    /// The recording ended cleanly.
    End,
}

pub struct Recorder {
    out: BufWriter<File>,
}

impl Recorder {
    pub fn create(path: &Path, meta: &Meta) -> anyhow::Result<Recorder> {
        let f = crate::output::private::open(path, false).with_context(|| format!("cannot create the record file {}", path.display()))?;
        let mut r = Recorder { out: BufWriter::new(f) };
        r.out.write_all(MAGIC)?;
        r.out.write_all(&VERSION.to_le_bytes())?;
        r.record(TAG_META, &serde_json::to_vec(meta)?)?;
        Ok(r)
    }

    fn record(&mut self, tag: u8, payload: &[u8]) -> std::io::Result<()> {
        self.out.write_all(&[tag])?;
        self.out.write_all(&(payload.len() as u32).to_le_bytes())?;
        self.out.write_all(payload)
    }

    pub fn event(&mut self, raw: &[u8]) -> std::io::Result<()> {
        self.record(TAG_EVENT, raw)
    }

    pub fn answer(&mut self, call: &str, args: &str, value: &impl Serialize) -> std::io::Result<()> {
        let v = serde_json::json!({ "call": call, "args": args, "value": value });
        self.record(TAG_ANSWER, &serde_json::to_vec(&v)?)
    }

    pub fn mark(&mut self, m: Mark) -> std::io::Result<()> {
        self.record(TAG_MARK, &serde_json::to_vec(&m)?)?;
        if m == Mark::End {
            self.out.flush()?;
        }
        Ok(())
    }
}

/// One record of a file, validated.
#[derive(Clone, Debug)]
pub enum Record {
    Event(Vec<u8>),
    /// `args` tells apart answers to the same question about different things (an inode, a pid).
    Answer {
        call: String,
        args: String,
        value: serde_json::Value,
    },
    Mark(Mark),
}

/// Read and validate a whole record file.
pub fn read(path: &Path) -> anyhow::Result<(Meta, Vec<Record>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{} is not a usable tracer record", path.display()))
}

pub fn parse(bytes: &[u8]) -> anyhow::Result<(Meta, Vec<Record>)> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        bail!("bad magic: not written by `tracer record`");
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        bail!("record format version {version}, this tracer reads version {VERSION}");
    }
    let mut off = 12;
    let mut meta = None;
    let mut records = Vec::new();
    let mut ended = false;
    while off < bytes.len() {
        if ended {
            bail!("corrupt: data after the end mark at byte {off}");
        }
        if bytes.len() - off < 5 {
            bail!("truncated at byte {off}: a record header is cut short");
        }
        let tag = bytes[off];
        let len = u32::from_le_bytes(bytes[off + 1..off + 5].try_into().expect("4 bytes")) as usize;
        if len > MAX_RECORD {
            bail!("corrupt at byte {off}: record length {len}");
        }
        let start = off + 5;
        let Some(payload) = bytes.get(start..start + len) else {
            bail!("truncated at byte {off}: record of {len} bytes, only {} left", bytes.len() - start);
        };
        let json = || serde_json::from_slice::<serde_json::Value>(payload).with_context(|| format!("corrupt JSON in the record at byte {off}"));
        match tag {
            TAG_META if meta.is_none() => meta = Some(serde_json::from_slice(payload).with_context(|| format!("corrupt header at byte {off}"))?),
            TAG_EVENT => {
                crate::kernel::events::Event::decode(payload).with_context(|| format!("corrupt event at byte {off}"))?;
                records.push(Record::Event(payload.to_vec()));
            }
            TAG_ANSWER => {
                let v = json()?;
                let call = v["call"].as_str().with_context(|| format!("corrupt answer at byte {off}"))?.to_string();
                let args = v["args"].as_str().unwrap_or_default().to_string();
                records.push(Record::Answer { call, args, value: v["value"].clone() });
            }
            TAG_MARK => {
                let m: Mark = serde_json::from_value(json()?).with_context(|| format!("corrupt mark at byte {off}"))?;
                ended = m == Mark::End;
                records.push(Record::Mark(m));
            }
            _ => bail!("corrupt at byte {off}: unknown record tag {tag}"),
        }
        off = start + len;
    }
    let meta = meta.context("no header record")?;
    if !ended {
        bail!("truncated: the file ends without its end mark (the recording was interrupted or the file was cut)");
    }
    Ok((meta, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        // One directory per call: tests run in parallel threads of one process.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tracer-rec-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("r");
        let meta = Meta { tracer_version: "t".into(), timebase_offset_ns: 5, filter: "f".into(), probes: vec![], nginx: None };
        let mut r = Recorder::create(&p, &meta).unwrap();
        r.answer("now_ns", "", &42u64).unwrap();
        r.mark(Mark::Batch).unwrap();
        r.mark(Mark::End).unwrap();
        drop(r);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640, "a recording is created 0640");
        let b = std::fs::read(&p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        b
    }

    #[test]
    fn round_trip() {
        let (meta, recs) = parse(&sample()).unwrap();
        assert_eq!(meta.timebase_offset_ns, 5);
        assert_eq!(recs.len(), 3);
        assert!(matches!(&recs[0], Record::Answer { call, value, .. } if call == "now_ns" && value == 42));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let b = sample();
        for cut in 0..b.len() {
            let e = parse(&b[..cut]).unwrap_err().to_string();
            assert!(e.contains("truncated") || e.contains("bad magic") || e.contains("no header"), "cut {cut}: {e}");
        }
    }

    #[test]
    fn corruption_is_named() {
        let mut b = sample();
        b[12] = 99; // the header record's tag
        assert!(parse(&b).unwrap_err().to_string().contains("unknown record tag"));
        let mut b = sample();
        b[0] = b'X';
        assert!(parse(&b).unwrap_err().to_string().contains("bad magic"));
        let mut b = sample();
        let n = b.len();
        b[n - 3] = b'!'; // inside the end mark's JSON
        assert!(parse(&b).is_err());
    }
}
