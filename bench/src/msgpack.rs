//! Just enough MessagePack for Serf's RPC protocol: an encoder for the small
//! maps we send and a decoder for any value Serf answers with.
//!
//! Serf's RPC stream has no length framing (a header value, then maybe a
//! body value), so [`decode`] works on a growing buffer and says when it
//! needs more bytes.

use anyhow::{Result, bail};

/// A decoded MessagePack value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Ext(i8, Vec<u8>),
}

impl Value {
    /// The value under string key `key` of a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_array(&self) -> &[Value] {
        match self {
            Value::Array(items) => items,
            _ => &[],
        }
    }
}

/// Appends `value` to `out`.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Nil => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Int(n) if (0..128).contains(n) => out.push(*n as u8),
        Value::Int(n) if (-32..0).contains(n) => out.push(*n as i8 as u8),
        Value::Int(n) => {
            out.push(0xd3);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Str(text) => {
            let len = text.len();
            if len < 32 {
                out.push(0xa0 | len as u8);
            } else if len < 256 {
                out.extend_from_slice(&[0xd9, len as u8]);
            } else {
                out.push(0xda);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            out.extend_from_slice(text.as_bytes());
        }
        Value::Bin(bytes) => {
            out.push(0xc5);
            out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        Value::Array(items) => {
            header(out, items.len(), 0x90, 0xdc);
            for item in items {
                encode(item, out);
            }
        }
        Value::Map(entries) => {
            header(out, entries.len(), 0x80, 0xde);
            for (k, v) in entries {
                encode(k, out);
                encode(v, out);
            }
        }
        Value::Ext(kind, data) => {
            out.push(0xc7);
            out.push(data.len() as u8);
            out.push(*kind as u8);
            out.extend_from_slice(data);
        }
    }
}

fn header(out: &mut Vec<u8>, len: usize, fix: u8, sixteen: u8) {
    if len < 16 {
        out.push(fix | len as u8);
    } else {
        out.push(sixteen);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
}

/// A map with string keys, for building requests.
pub fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Str(k.to_string()), v))
            .collect(),
    )
}

pub fn str(text: &str) -> Value {
    Value::Str(text.to_string())
}

/// Decodes one value from the front of `buf`: `Ok(None)` when `buf` holds
/// only part of it, else the value and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Value, usize)>> {
    let mut reader = Reader { buf, pos: 0 };
    match reader.value() {
        Ok(value) => Ok(Some((value, reader.pos))),
        Err(Incomplete::NeedMore) => Ok(None),
        Err(Incomplete::Bad(byte)) => bail!("msgpack: unknown type byte {byte:#04x}"),
    }
}

enum Incomplete {
    NeedMore,
    Bad(u8),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Incomplete> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(Incomplete::NeedMore)?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn uint(&mut self, n: usize) -> Result<u64, Incomplete> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn int(&mut self, n: usize) -> Result<i64, Incomplete> {
        let raw = self.uint(n)?;
        let shift = 64 - 8 * n as u32;
        Ok(((raw << shift) as i64) >> shift)
    }

    fn string(&mut self, len: usize) -> Result<Value, Incomplete> {
        Ok(Value::Str(
            String::from_utf8_lossy(self.take(len)?).into_owned(),
        ))
    }

    fn array(&mut self, len: usize) -> Result<Value, Incomplete> {
        (0..len)
            .map(|_| self.value())
            .collect::<Result<_, _>>()
            .map(Value::Array)
    }

    fn map(&mut self, len: usize) -> Result<Value, Incomplete> {
        (0..len)
            .map(|_| Ok((self.value()?, self.value()?)))
            .collect::<Result<_, _>>()
            .map(Value::Map)
    }

    fn ext(&mut self, len: usize) -> Result<Value, Incomplete> {
        let kind = self.take(1)?[0] as i8;
        Ok(Value::Ext(kind, self.take(len)?.to_vec()))
    }

    fn value(&mut self) -> Result<Value, Incomplete> {
        let byte = self.take(1)?[0];
        Ok(match byte {
            0x00..=0x7f => Value::Int(i64::from(byte)),
            0x80..=0x8f => self.map(usize::from(byte & 0x0f))?,
            0x90..=0x9f => self.array(usize::from(byte & 0x0f))?,
            0xa0..=0xbf => self.string(usize::from(byte & 0x1f))?,
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let len = self.uint(1 << (byte - 0xc4))? as usize;
                Value::Bin(self.take(len)?.to_vec())
            }
            0xc7..=0xc9 => {
                let len = self.uint(1 << (byte - 0xc7))? as usize;
                self.ext(len)?
            }
            0xca => Value::Float(f64::from(f32::from_bits(self.uint(4)? as u32))),
            0xcb => Value::Float(f64::from_bits(self.uint(8)?)),
            0xcc..=0xcf => Value::Int(self.uint(1 << (byte - 0xcc))? as i64),
            0xd0..=0xd3 => Value::Int(self.int(1 << (byte - 0xd0))?),
            0xd4..=0xd8 => self.ext(1 << (byte - 0xd4))?,
            0xd9..=0xdb => {
                let len = self.uint(1 << (byte - 0xd9))? as usize;
                self.string(len)?
            }
            0xdc | 0xdd => {
                let len = self.uint(2 << (byte - 0xdc))? as usize;
                self.array(len)?
            }
            0xde | 0xdf => {
                let len = self.uint(2 << (byte - 0xde))? as usize;
                self.map(len)?
            }
            0xe0..=0xff => Value::Int(i64::from(byte as i8)),
            other => return Err(Incomplete::Bad(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_partial_input() {
        let value = map([
            ("Command", str("members-filtered")),
            ("Seq", Value::Int(300)),
            ("Neg", Value::Int(-5)),
            ("Big", Value::Int(-70_000)),
            ("Tags", map([("bench", str(&"x".repeat(40)))])),
            ("List", Value::Array((0..20).map(Value::Int).collect())),
            ("Ok", Value::Bool(true)),
        ]);
        let mut bytes = Vec::new();
        encode(&value, &mut bytes);
        let (decoded, used) = decode(&bytes).unwrap().unwrap();
        assert_eq!(decoded, value);
        assert_eq!(used, bytes.len());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).unwrap().is_none(), "cut at {cut}");
        }
    }
}
