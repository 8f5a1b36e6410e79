//! Member offsets of kernel structs, from the kernel's own type information
//! (/sys/kernel/btf/vmlinux). The kernel programs read a few `struct sock` fields whose place
//! depends on the kernel's configuration; the loader looks them up here and passes them in.
//! aya parses BTF but does not expose member lookups, hence this small reader of the format
//! (Documentation/bpf/btf.rst): a header, a type section, a string section.

use anyhow::{bail, Context as _, Result};

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

pub struct Btf {
    data: Vec<u8>,
    types: (usize, usize),
    strings: (usize, usize),
}

impl Btf {
    pub fn from_sys_fs() -> Result<Btf> {
        Btf::parse(std::fs::read("/sys/kernel/btf/vmlinux").context("reading /sys/kernel/btf/vmlinux")?)
    }

    pub fn parse(data: Vec<u8>) -> Result<Btf> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            bail!("not little-endian BTF");
        }
        let u = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().expect("4 bytes")) as usize;
        let hdr_len = u(4);
        let types = (hdr_len + u(8), hdr_len + u(8) + u(12));
        let strings = (hdr_len + u(16), hdr_len + u(16) + u(20));
        if types.1 > data.len() || strings.1 > data.len() {
            bail!("truncated BTF");
        }
        Ok(Btf { data, types, strings })
    }

    fn u32_at(&self, o: usize) -> u32 {
        u32::from_le_bytes(self.data[o..o + 4].try_into().expect("4 bytes"))
    }

    fn name(&self, off: u32) -> &[u8] {
        let start = self.strings.0 + off as usize;
        let rest = &self.data[start.min(self.strings.1)..self.strings.1];
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// Byte offset of `member` in the struct named `strukt` (a direct member; bitfields refused).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32> {
        let mut o = self.types.0;
        while o + 12 <= self.types.1 {
            let (name_off, info) = (self.u32_at(o), self.u32_at(o + 4));
            let (kind, vlen, kflag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31 == 1);
            let members = o + 12;
            let extra = extra_len(kind, vlen).with_context(|| format!("unknown BTF kind {kind}"))?;
            if members + extra > self.types.1 {
                bail!("truncated BTF type section");
            }
            if (kind == KIND_STRUCT || kind == KIND_UNION) && self.name(name_off) == strukt.as_bytes() {
                for m in 0..vlen {
                    let at = members + m * 12;
                    if self.name(self.u32_at(at)) == member.as_bytes() {
                        let raw = self.u32_at(at + 8);
                        let bits = if kflag { raw & 0xff_ffff } else { raw };
                        if bits % 8 != 0 || (kflag && raw >> 24 != 0) {
                            bail!("{strukt}.{member} is a bitfield");
                        }
                        return Ok(bits / 8);
                    }
                }
                bail!("struct {strukt} has no member {member}");
            }
            o = members + extra;
        }
        bail!("no struct {strukt} in the kernel's BTF")
    }
}

/// Bytes that follow a type's 12-byte common part, by kind.
fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
        3 => 12,                      // ARRAY
        4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION, DATASEC, ENUM64
        6 | 13 => vlen * 8,           // ENUM, FUNC_PROTO
        2 | 7..=12 | 16 | 18 => 0,    // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built BTF blob: `struct s { int a; int b; }` with b at byte 4.
    #[test]
    fn finds_a_member_offset() {
        let strings = b"\0int\0s\0a\0b\0";
        let mut types = Vec::new();
        let mut push = |v: u32| types.extend_from_slice(&v.to_le_bytes());
        // [1] INT "int" size 4, encoding word.
        push(1);
        push(1 << 24);
        push(4);
        push(32);
        // [2] STRUCT "s" size 8, 2 members.
        push(5);
        push((4 << 24) | 2);
        push(8);
        for (name, bits) in [(7u32, 0u32), (9, 32)] {
            push(name);
            push(1);
            push(bits);
        }
        let mut data = Vec::new();
        data.extend_from_slice(&MAGIC.to_le_bytes());
        data.extend_from_slice(&[1, 0]);
        for v in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(strings);
        let btf = Btf::parse(data).unwrap();
        assert_eq!(btf.member_offset("s", "b").unwrap(), 4);
        assert_eq!(btf.member_offset("s", "a").unwrap(), 0);
        assert!(btf.member_offset("s", "c").is_err());
        assert!(btf.member_offset("t", "a").is_err());
    }

    #[test]
    fn a_truncated_type_is_an_error_not_a_panic() {
        // A STRUCT claiming 100 members in a 12-byte type section.
        let mut data = Vec::new();
        data.extend_from_slice(&MAGIC.to_le_bytes());
        data.extend_from_slice(&[1, 0]);
        for v in [24u32, 0, 12, 12, 2] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        for v in [1u32, (4 << 24) | 100, 8] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(b"\0\0");
        let btf = Btf::parse(data).unwrap();
        assert!(btf.member_offset("s", "a").is_err());
    }

    #[test]
    fn this_kernel_has_sock_common_v6_addresses() {
        // Where the kernel exposes BTF (every supported one), the members the probes read exist.
        let Ok(btf) = Btf::from_sys_fs() else { return };
        let d = btf.member_offset("sock_common", "skc_v6_daddr").unwrap();
        let s = btf.member_offset("sock_common", "skc_v6_rcv_saddr").unwrap();
        assert_eq!(s, d + 16);
    }
}
