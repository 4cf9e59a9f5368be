//! The lexer of the filter language: words (selectors and bare values,
//! with their path), strings (Go's `"..."` escapes and `` `raw` ``),
//! numbers, `==`, `!=` and parentheses, each with its byte offset.

use super::parse::FilterError;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// A selector-like bare word: its path and the text as written.
    Word(Vec<String>, String),
    Str(String),
    Num(String),
    Eq,
    Ne,
    Open,
    Close,
    End,
}

#[derive(Clone, Debug)]
pub struct Token {
    pub tok: Tok,
    /// Byte offset in the source.
    pub at: usize,
}

pub fn position(source: &str, at: usize) -> usize {
    source.get(..at).map_or(at, |s| s.chars().count()) + 1
}

pub fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Word(_, text) => format!("`{text}`"),
        Tok::Str(text) => format!("string \"{text}\""),
        Tok::Num(text) => format!("number {text}"),
        Tok::Eq => "`==`".into(),
        Tok::Ne => "`!=`".into(),
        Tok::Open => "`(`".into(),
        Tok::Close => "`)`".into(),
        Tok::End => "the end of the expression".into(),
    }
}

pub fn lex(source: &str) -> Result<Vec<Token>, FilterError> {
    let error = |at: usize, message: String| FilterError {
        position: position(source, at),
        message,
    };
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let at = i;
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => {
                tokens.push(Token { tok: Tok::Open, at });
                i += 1;
            }
            b')' => {
                tokens.push(Token {
                    tok: Tok::Close,
                    at,
                });
                i += 1;
            }
            b'=' | b'!' if bytes.get(i + 1) == Some(&b'=') => {
                let tok = if c == b'=' { Tok::Eq } else { Tok::Ne };
                tokens.push(Token { tok, at });
                i += 2;
            }
            b'"' | b'`' => {
                let (text, end) = string(source, i).map_err(|(at, m)| error(at, m))?;
                tokens.push(Token {
                    tok: Tok::Str(text),
                    at,
                });
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let mut end = i + 1;
                while end < bytes.len() && (bytes[end].is_ascii_digit() || bytes[end] == b'.') {
                    end += 1;
                }
                let text = &source[i..end];
                let well_formed = text.trim_start_matches('-').parse::<f64>().is_ok()
                    && !text.ends_with('.')
                    && text != "-";
                let followed_ok = bytes
                    .get(end)
                    .is_none_or(|b| b.is_ascii_whitespace() || *b == b')');
                if !well_formed || !followed_ok {
                    return Err(error(
                        at,
                        format!("invalid number `{}`", word_at(source, i)),
                    ));
                }
                tokens.push(Token {
                    tok: Tok::Num(text.to_string()),
                    at,
                });
                i = end;
            }
            c if c.is_ascii_alphabetic() => {
                let (path, end) = word(source, i).map_err(|(at, m)| error(at, m))?;
                tokens.push(Token {
                    tok: Tok::Word(path, source[i..end].to_string()),
                    at,
                });
                i = end;
            }
            _ => {
                let shown = source[i..].chars().next().unwrap_or('?');
                return Err(error(at, format!("unexpected character `{shown}`")));
            }
        }
    }
    tokens.push(Token {
        tok: Tok::End,
        at: source.len(),
    });
    Ok(tokens)
}

/// The run of non-space characters at `i`, for messages.
fn word_at(source: &str, i: usize) -> &str {
    let rest = &source[i..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ')')
        .unwrap_or(rest.len());
    &rest[..end]
}

/// An identifier runs over `[A-Za-z0-9_/-]`: go-bexpr's, plus `-`, so
/// that bare values such as `web-1` need no quotes (no operator has `-`).
fn identifier_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len()
        && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'/' | b'-'))
    {
        i += 1;
    }
    i
}

/// A selector-like word: `Service.Meta["env name"].x`, `Checks.0`.
fn word(source: &str, start: usize) -> Result<(Vec<String>, usize), (usize, String)> {
    let bytes = source.as_bytes();
    let mut end = identifier_end(bytes, start);
    let mut path = vec![source[start..end].to_string()];
    loop {
        match bytes.get(end) {
            Some(b'.') if bytes.get(end + 1).is_some_and(u8::is_ascii_alphanumeric) => {
                let from = end + 1;
                end = if bytes[from].is_ascii_digit() {
                    from + bytes[from..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count()
                } else {
                    identifier_end(bytes, from)
                };
                path.push(source[from..end].to_string());
            }
            Some(b'[') => {
                let open = end;
                let mut i = end + 1;
                while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
                    i += 1;
                }
                if !matches!(bytes.get(i), Some(b'"' | b'`')) {
                    return Err((open, "an index must be a quoted string: [\"key\"]".into()));
                }
                let (key, after) = string(source, i)?;
                i = after;
                while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
                    i += 1;
                }
                if bytes.get(i) != Some(&b']') {
                    return Err((open, "unclosed index: expected `]`".into()));
                }
                path.push(key);
                end = i + 1;
            }
            _ => return Ok((path, end)),
        }
    }
}

/// A Go string literal at `start` (`"..."` with escapes, or `` `raw` ``):
/// its value and the offset after it.
fn string(source: &str, start: usize) -> Result<(String, usize), (usize, String)> {
    let quote = source.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = source[start + 1..].char_indices();
    let unterminated = || (start, "unterminated string literal".to_string());
    while let Some((offset, c)) = chars.next() {
        let at = start + 1 + offset;
        if c == quote {
            return Ok((out, at + 1));
        }
        if c != '\\' || quote == '`' {
            out.push(c);
            continue;
        }
        let (_, escape) = chars.next().ok_or_else(unterminated)?;
        let mut hex = |digits: usize| -> Result<char, (usize, String)> {
            let text: String = (0..digits)
                .filter_map(|_| chars.next().map(|(_, c)| c))
                .collect();
            u32::from_str_radix(&text, 16)
                .ok()
                .filter(|_| text.len() == digits)
                .and_then(char::from_u32)
                .ok_or_else(|| (at, format!("invalid escape `\\{escape}{text}`")))
        };
        out.push(match escape {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'a' => '\x07',
            'b' => '\x08',
            'f' => '\x0c',
            'v' => '\x0b',
            '\\' => '\\',
            '"' => '"',
            'x' => hex(2)?,
            'u' => hex(4)?,
            'U' => hex(8)?,
            other => return Err((at, format!("invalid escape `\\{other}`"))),
        });
    }
    Err(unterminated())
}
