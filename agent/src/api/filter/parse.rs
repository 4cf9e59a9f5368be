//! The go-bexpr grammar, parsed by hand (recursive descent over a small
//! lexer).
//!
//! Why by hand and not with a parser crate: the grammar is a dozen rules
//! with no operator table beyond `or` < `and` < `not`, the keywords are
//! context-dependent (`not` starts an expression but also `not in`,
//! `not contains`, `not matches`, `is not empty`), and every error must
//! name its position. A crate would add a dependency (and for `pest` a
//! build-time code generator) to save fewer lines than it costs.
//!
//! ```text
//! or_expr   := and_expr ("or" and_expr)*
//! and_expr  := not_expr ("and" not_expr)*
//! not_expr  := "not" not_expr | "(" or_expr ")" | match
//! match     := selector ("==" | "!=") value
//!            | selector ["not"] ("contains" | "matches") value
//!            | selector "is" ["not"] "empty"
//!            | value ["not"] "in" selector
//! selector  := ident ("." ident | "." digits | "[" string "]")*
//!            | "\"/json/pointer\""
//! value     := string | number | selector-like bare word
//! ```

use regex_automata::meta::Regex;

use super::lex::{Tok, Token, describe, lex, position};

/// What went wrong, and where (1-based character position).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    pub position: usize,
    pub message: String,
}

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at position {}: {}", self.position, self.message)
    }
}

/// Deepest nesting of `not` and parentheses accepted: far beyond any real
/// filter, and well within the stack.
const MAX_DEPTH: usize = 64;
/// Most `matches` / `not matches` terms in one filter. Each is a regular
/// expression compiled for every request (and every wake of a blocking
/// query); real filters have one or two.
pub const MAX_REGEX_TERMS: usize = 32;
/// What all the regular expressions of one filter may compile to together
/// (their NFAs, `meta::Regex::memory_usage`; searching adds a cache about
/// as large). It bounds both the memory of a filter being evaluated and
/// the time to compile it (about 15 ms at the budget). Measured sizes:
/// `web` 2 KiB, `[a-z]{20}` 4 KiB, `(?-u:\w){20}` 8 KiB, `\w+` 56 KiB,
/// `\w{5}` 275 KiB, `\w{20}` 1.1 MiB (Unicode `\w` spans every script's
/// letters, and a count repeats it): 32 simple patterns or eight `\w+`
/// fit, one `\w{20}` does not.
pub const MAX_FILTER_REGEX_BYTES: usize = 512 * 1024;

/// A parsed expression. A chain of `or`s (or of `and`s) is one node with
/// its terms in order, not a nested pair per operator: checking, running
/// and dropping an expression then recurse only as deep as its `not`s and
/// parentheses (at most 64 deep), never once per term (a chain of a
/// few thousand terms overflowed a 2 MiB thread's stack).
#[derive(Clone, Debug)]
pub enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Match(Match),
}

/// One matching expression: `selector op value`.
#[derive(Clone, Debug)]
pub struct Match {
    pub selector: Selector,
    pub op: Op,
    /// `!=`, `not in`, `not contains`, `not matches`, `is not empty`.
    pub negate: bool,
}

#[derive(Clone, Debug)]
pub struct Selector {
    pub path: Vec<String>,
    /// As written, for error messages.
    pub text: String,
    pub position: usize,
}

#[derive(Clone, Debug)]
pub enum Op {
    /// `==` (and `!=`, negated) with the value as written.
    Equal(String),
    /// `value in selector` / `selector contains value`.
    Contains(String),
    Matches(Regex),
    IsEmpty,
}

/// Parses `source` into an expression.
pub fn parse(source: &str) -> Result<Expr, FilterError> {
    let tokens = lex(source)?;
    // Counted before anything is compiled: a filter of 250 regexes costs
    // no more than its lexing.
    if let Some(past) = tokens
        .iter()
        .filter(|token| Parser::is_keyword(&token.tok, "matches"))
        .nth(MAX_REGEX_TERMS)
    {
        return Err(FilterError {
            position: position(source, past.at),
            message: format!(
                "a filter may have at most {MAX_REGEX_TERMS} `matches` or `not matches` terms (the filter budget)"
            ),
        });
    }
    let mut parser = Parser {
        source,
        tokens,
        next: 0,
        depth: 0,
        regex_bytes: 0,
        counted: (0, 0),
    };
    if parser.peek().tok == Tok::End {
        return Err(parser.error_at(0, "the expression is empty"));
    }
    let expr = parser.or_expr()?;
    let token = parser.peek();
    if token.tok != Tok::End {
        return Err(parser.error_at(
            token.at,
            format!(
                "unexpected {} after a complete expression (missing `and`/`or`?)",
                describe(&token.tok)
            ),
        ));
    }
    Ok(expr)
}

struct Parser<'a> {
    source: &'a str,
    tokens: Vec<Token>,
    next: usize,
    depth: usize,
    /// What their regular expressions compiled to, together.
    regex_bytes: usize,
    /// A byte offset in `source` and the characters before it: selectors
    /// come in order, so each one's position is counted on from the last
    /// (counting from the start each time made a long filter quadratic).
    counted: (usize, usize),
}

impl Parser<'_> {
    fn peek(&self) -> Token {
        self.tokens[self.next.min(self.tokens.len() - 1)].clone()
    }

    fn peek_second(&self) -> Tok {
        self.tokens[(self.next + 1).min(self.tokens.len() - 1)]
            .tok
            .clone()
    }

    fn bump(&mut self) -> Token {
        let token = self.peek();
        if self.next < self.tokens.len() - 1 {
            self.next += 1;
        }
        token
    }

    fn is_keyword(tok: &Tok, keyword: &str) -> bool {
        matches!(tok, Tok::Word(path, _) if path.len() == 1 && path[0] == keyword)
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        Self::is_keyword(&self.peek().tok, keyword)
    }

    fn error_at(&self, at: usize, message: impl Into<String>) -> FilterError {
        FilterError {
            position: position(self.source, at),
            message: message.into(),
        }
    }

    fn deeper(&mut self, at: usize) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_at(at, format!("nested more than {MAX_DEPTH} deep")));
        }
        Ok(())
    }

    fn or_expr(&mut self) -> Result<Expr, FilterError> {
        let first = self.and_expr()?;
        if !self.at_keyword("or") {
            return Ok(first);
        }
        let mut terms = vec![first];
        while self.at_keyword("or") {
            self.bump();
            terms.push(self.and_expr()?);
        }
        Ok(Expr::Or(terms))
    }

    fn and_expr(&mut self) -> Result<Expr, FilterError> {
        let first = self.not_expr()?;
        if !self.at_keyword("and") {
            return Ok(first);
        }
        let mut terms = vec![first];
        while self.at_keyword("and") {
            self.bump();
            terms.push(self.not_expr()?);
        }
        Ok(Expr::And(terms))
    }

    fn not_expr(&mut self) -> Result<Expr, FilterError> {
        let token = self.peek();
        // `not in` after a value is a match, not a negation.
        if Self::is_keyword(&token.tok, "not") && !Self::is_keyword(&self.peek_second(), "in") {
            self.bump();
            self.deeper(token.at)?;
            let inner = self.not_expr()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if token.tok == Tok::Open {
            self.bump();
            self.deeper(token.at)?;
            let inner = self.or_expr()?;
            self.depth -= 1;
            let close = self.bump();
            if close.tok != Tok::Close {
                return Err(self.error_at(
                    close.at,
                    format!(
                        "expected `)` to close the `(` at position {}, found {}",
                        position(self.source, token.at),
                        describe(&close.tok)
                    ),
                ));
            }
            return Ok(inner);
        }
        self.matching().map(Expr::Match)
    }

    fn matching(&mut self) -> Result<Match, FilterError> {
        let first = self.bump();
        if !matches!(first.tok, Tok::Word(..) | Tok::Str(_) | Tok::Num(_)) {
            return Err(self.error_at(
                first.at,
                format!(
                    "expected a selector or a value, found {}",
                    describe(&first.tok)
                ),
            ));
        }
        // value [not] in selector
        let negated_in = self.at_keyword("not") && Self::is_keyword(&self.peek_second(), "in");
        if self.at_keyword("in") || negated_in {
            if negated_in {
                self.bump();
            }
            self.bump();
            let value = literal(&first.tok);
            let selector = self.selector()?;
            return Ok(Match {
                selector,
                op: Op::Contains(value),
                negate: negated_in,
            });
        }
        let selector = self.selector_from(first)?;
        let op_token = self.bump();
        let (negate, op_token) = if Self::is_keyword(&op_token.tok, "not") {
            (true, self.bump())
        } else {
            (false, op_token)
        };
        let keyword = |word: &str| Self::is_keyword(&op_token.tok, word);
        let op = match &op_token.tok {
            Tok::Eq | Tok::Ne if !negate => {
                let value = self.value()?;
                return Ok(Match {
                    selector,
                    op: Op::Equal(value),
                    negate: op_token.tok == Tok::Ne,
                });
            }
            _ if keyword("contains") => Op::Contains(self.value()?),
            _ if keyword("matches") => {
                let at = self.peek().at;
                let pattern = self.value()?;
                Op::Matches(self.compile(&pattern, at)?)
            }
            _ if keyword("is") && !negate => {
                let mut next = self.bump();
                let negate = Self::is_keyword(&next.tok, "not");
                if negate {
                    next = self.bump();
                }
                if !Self::is_keyword(&next.tok, "empty") {
                    return Err(self.error_at(
                        next.at,
                        format!("expected `empty` after `is`, found {}", describe(&next.tok)),
                    ));
                }
                return Ok(Match {
                    selector,
                    op: Op::IsEmpty,
                    negate,
                });
            }
            other => {
                let expected = if negate {
                    "`in`, `contains` or `matches` after `not`"
                } else {
                    "an operator (==, !=, contains, not contains, matches, not matches, is empty, is not empty, in, not in)"
                };
                return Err(self.error_at(
                    op_token.at,
                    format!(
                        "expected {expected} after `{}`, found {}",
                        selector.text,
                        describe(other)
                    ),
                ));
            }
        };
        Ok(Match {
            selector,
            op,
            negate,
        })
    }

    /// Compiles the regular expression of a `matches` term at `at`, within
    /// what is left of the filter's budgets.
    fn compile(&mut self, pattern: &str, at: usize) -> Result<Regex, FilterError> {
        let left = MAX_FILTER_REGEX_BYTES.saturating_sub(self.regex_bytes);
        let regex = Regex::builder()
            .configure(Regex::config().nfa_size_limit(Some(left)))
            .build(pattern)
            .map_err(|error| {
                let message = match error.size_limit() {
                    Some(_) => format!(
                        "the regular expressions of a filter may compile to at most {} KiB together (the filter budget), and this one needs more than the {} KiB left; use simpler patterns (a counted Unicode class such as `\\w{{20}}` is large; `(?-u:\\w){{20}}` or `[a-z0-9_]{{20}}` is small), or fewer",
                        MAX_FILTER_REGEX_BYTES / 1024,
                        left / 1024
                    ),
                    None => format!("invalid regular expression: {error}"),
                };
                self.error_at(at, message)
            })?;
        self.regex_bytes += regex.memory_usage();
        if self.regex_bytes > MAX_FILTER_REGEX_BYTES {
            return Err(self.error_at(
                at,
                format!(
                    "the regular expressions of a filter may compile to at most {} KiB together (the filter budget), and with this one they take {} KiB; use simpler patterns, or fewer",
                    MAX_FILTER_REGEX_BYTES / 1024,
                    self.regex_bytes.div_ceil(1024)
                ),
            ));
        }
        Ok(regex)
    }

    fn selector(&mut self) -> Result<Selector, FilterError> {
        let token = self.bump();
        self.selector_from(token)
    }

    /// The 1-based character position of byte offset `at`, as
    /// [`position`] gives it, counted on from the last one asked for.
    fn position_of(&mut self, at: usize) -> usize {
        let (from, before) = self.counted;
        match self.source.get(from..at) {
            Some(between) if at >= from => {
                self.counted = (at, before + between.chars().count());
                self.counted.1 + 1
            }
            _ => position(self.source, at),
        }
    }

    fn selector_from(&mut self, token: Token) -> Result<Selector, FilterError> {
        let position = self.position_of(token.at);
        match token.tok {
            Tok::Word(path, text) => Ok(Selector {
                path,
                text,
                position,
            }),
            // A quoted JSON Pointer: "/Service/Tags".
            Tok::Str(text) if text.starts_with('/') => Ok(Selector {
                path: text[1..]
                    .split('/')
                    .map(|part| part.replace("~1", "/").replace("~0", "~"))
                    .collect(),
                text,
                position,
            }),
            other => Err(self.error_at(
                token.at,
                format!(
                    "expected a selector (such as Service.Tags), found {}",
                    describe(&other)
                ),
            )),
        }
    }

    fn value(&mut self) -> Result<String, FilterError> {
        let token = self.bump();
        match &token.tok {
            Tok::Word(..) | Tok::Str(_) | Tok::Num(_) => Ok(literal(&token.tok)),
            other => Err(self.error_at(
                token.at,
                format!("expected a value, found {}", describe(other)),
            )),
        }
    }
}

fn literal(tok: &Tok) -> String {
    match tok {
        Tok::Word(_, text) | Tok::Str(text) | Tok::Num(text) => text.clone(),
        _ => String::new(),
    }
}
