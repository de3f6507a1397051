//! LogQL, the query language of Loki's API, parsed into a syntax tree: the part of it that
//! Grafana's Loki data source sends (Explore, log panels, log volume, trace-to-logs). What is
//! not supported is refused with an error naming the construct, in Loki's own words
//! (`parse error at line 1, col N: ...`), never read as something else.
//!
//! ```text
//! query     = metric | log
//! log       = selector stage*
//! selector  = "{" matcher ("," matcher)* "}"          matcher = name ("=" | "!=" | "=~" | "!~") string
//! stage     = ("|=" | "!=" | "|~" | "!~") string ("or" string)*
//!           | "|" ("json" | "logfmt") [params] | "|" "drop" names | "|" "line_format" string
//!           | "|" "label_format" name "=" (string | name) ("," ...)* | "|" label-filter
//! metric    = range | vector-op | "vector" "(" number ")" | number | metric binop metric | "(" metric ")"
//! range     = ("count_over_time" | "rate" | "bytes_over_time" | "bytes_rate") "(" log "[" duration "]" ")"
//! vector-op = ("sum" | "count" | "avg" | "max" | "min") [grouping] "(" metric ")" [grouping]
//!           | "topk" | "bottomk" [grouping] "(" number "," metric ")" [grouping]
//! ```

use std::fmt;

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Log(LogQuery),
    Metric(Metric),
}

/// A stream selector and the stages its lines pass through, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct LogQuery {
    pub selector: Vec<Matcher>,
    pub stages: Vec<Stage>,
}

/// `name op "value"`, a label matcher (regexes fully anchored, RE2).
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

/// One step of a log pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// `|= "a"`, `!= "a"`, `|~ "re"`, `!~ "re"`; with `or`, any of the values.
    Line {
        op: LineOp,
        values: Vec<String>,
    },
    /// `| json` or `| logfmt`, every field extracted, or just the named ones (`name="path"`).
    Json(Vec<(String, String)>),
    Logfmt(Vec<(String, String)>),
    /// `| drop a, b="v"`: labels dropped, by name or when they match.
    Drop(Vec<DropItem>),
    /// `| line_format "template"`.
    LineFormat(String),
    /// `| label_format a=b, c="template"`.
    LabelFormat(Vec<(String, LabelFormat)>),
    /// `| level="error" and duration > 1s`.
    Filter(LabelFilter),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineOp {
    Contains,
    NotContains,
    Matches,
    NotMatches,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DropItem {
    Name(String),
    Matching(Matcher),
}

#[derive(Debug, Clone, PartialEq)]
pub enum LabelFormat {
    /// `new=old`: the label renamed.
    Rename(String),
    /// `new="{{ template }}"`.
    Template(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum LabelFilter {
    And(Box<LabelFilter>, Box<LabelFilter>),
    Or(Box<LabelFilter>, Box<LabelFilter>),
    /// `name op "text"`, compared as text.
    Text(Matcher),
    /// `name op number`, the label read as a number, a duration (in seconds) or bytes.
    Number {
        name: String,
        op: CmpOp,
        value: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A metric query: an instant vector at each step.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// `count_over_time({...}[5m])` and its kin.
    Range {
        func: RangeFunc,
        log: LogQuery,
        range_nanos: i64,
    },
    /// `sum by (level) (...)` and its kin; `param` is topk's and bottomk's k.
    Aggregate {
        op: AggregateOp,
        grouping: Option<Grouping>,
        param: Option<f64>,
        inner: Box<Metric>,
    },
    /// `vector(1)`.
    Vector(f64),
    /// A number.
    Scalar(f64),
    Binary {
        op: BinaryOp,
        lhs: Box<Metric>,
        rhs: Box<Metric>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeFunc {
    CountOverTime,
    Rate,
    BytesOverTime,
    BytesRate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateOp {
    Sum,
    Count,
    Avg,
    Max,
    Min,
    Topk,
    Bottomk,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grouping {
    By(Vec<String>),
    Without(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// Why a query was refused: Loki's own wording, with where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "parse error at line 1, col {}: {}", self.col, self.message)
    }
}

impl std::error::Error for ParseError {}

/// The longest query parsed, in bytes; Grafana's are far shorter.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// Deepest nesting of metric expressions and label filters.
const MAX_DEPTH: usize = 64;

/// Parses a LogQL query.
///
/// # Errors
/// [`ParseError`] naming what is wrong or not supported, and where.
pub fn parse(query: &str) -> Result<Query, ParseError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(ParseError { col: 1, message: format!("query longer than {MAX_QUERY_BYTES} bytes") });
    }
    let tokens = lex(query)?;
    let mut parser = Parser { tokens, at: 0, depth: 0 };
    let parsed = if parser.peek_is(&Token::LBrace) {
        Query::Log(parser.log()?)
    } else {
        Query::Metric(parser.metric(0)?)
    };
    match parser.peek() {
        Token::End => Ok(parsed),
        other => Err(parser.error(format!("syntax error: unexpected {other}"))),
    }
}

/// Parses a Prometheus-style duration (`5m`, `1h30m`, `250ms`) into nanoseconds.
///
/// # Errors
/// A message when it is not one.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let mut total: i64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number.parse().map_err(|_| format!("not a duration: {text:?}"))?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86_400e9,
            "w" => 604_800e9,
            "y" => 365.0 * 86_400e9,
            _ => return Err(format!("not a duration: {text:?}")),
        };
        let add = number * nanos;
        if !add.is_finite() || add > i64::MAX as f64 {
            return Err(format!("duration out of range: {text:?}"));
        }
        total = total.checked_add(add as i64).ok_or_else(|| format!("duration out of range: {text:?}"))?;
        rest = tail;
    }
    Ok(total)
}

/// Bytes in a size like `10KB`, `1.5MiB`.
pub fn parse_bytes(text: &str) -> Option<f64> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit.to_ascii_uppercase().as_str() {
        "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        "TIB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number * factor)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LBrace,
    RBrace,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Pipe,
    /// `=`, `!=`, `=~`, `!~`, `==`, `>`, `>=`, `<`, `<=`, `|=`, `|~`.
    Op(&'static str),
    Plus,
    Minus,
    Star,
    Slash,
    Ident(String),
    Str(String),
    /// A number, a duration or a size, as written.
    Number(String),
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::LBrace => f.write_str("{"),
            Token::RBrace => f.write_str("}"),
            Token::LParen => f.write_str("("),
            Token::RParen => f.write_str(")"),
            Token::LBracket => f.write_str("["),
            Token::RBracket => f.write_str("]"),
            Token::Comma => f.write_str(","),
            Token::Pipe => f.write_str("|"),
            Token::Op(op) => f.write_str(op),
            Token::Plus => f.write_str("+"),
            Token::Minus => f.write_str("-"),
            Token::Star => f.write_str("*"),
            Token::Slash => f.write_str("/"),
            Token::Ident(name) => f.write_str(name),
            Token::Str(text) => write!(f, "{text:?}"),
            Token::Number(text) => f.write_str(text),
            Token::End => f.write_str("end of input"),
        }
    }
}

/// Tokens with the column (1-based, in characters) each starts at.
fn lex(query: &str) -> Result<Vec<(Token, usize)>, ParseError> {
    let chars: Vec<char> = query.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let error = |col: usize, message: String| ParseError { col, message };
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        let next = chars.get(i + 1).copied();
        let two = |a: char, b: char| c == a && next == Some(b);
        let (token, len) = match c {
            _ if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '#' => {
                // A comment, to the end of the line.
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '{' => (Token::LBrace, 1),
            '}' => (Token::RBrace, 1),
            '(' => (Token::LParen, 1),
            ')' => (Token::RParen, 1),
            '[' => (Token::LBracket, 1),
            ']' => (Token::RBracket, 1),
            ',' => (Token::Comma, 1),
            '+' => (Token::Plus, 1),
            '-' if !next.is_some_and(|n| n.is_ascii_digit()) => (Token::Minus, 1),
            '*' => (Token::Star, 1),
            '/' => (Token::Slash, 1),
            _ if two('|', '=') => (Token::Op("|="), 2),
            _ if two('|', '~') => (Token::Op("|~"), 2),
            _ if two('!', '=') => (Token::Op("!="), 2),
            _ if two('!', '~') => (Token::Op("!~"), 2),
            _ if two('=', '~') => (Token::Op("=~"), 2),
            _ if two('=', '=') => (Token::Op("=="), 2),
            _ if two('>', '=') => (Token::Op(">="), 2),
            _ if two('<', '=') => (Token::Op("<="), 2),
            '|' => (Token::Pipe, 1),
            '=' => (Token::Op("="), 1),
            '>' => (Token::Op(">"), 1),
            '<' => (Token::Op("<"), 1),
            '"' => {
                let (text, len) = quoted(&chars[i..]).map_err(|m| error(col, m))?;
                (Token::Str(text), len)
            }
            '`' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or_else(|| error(col, "syntax error: unterminated raw string".into()))?;
                (Token::Str(chars[i + 1..i + 1 + end].iter().collect()), end + 2)
            }
            _ if c.is_ascii_digit() || c == '-' || c == '.' => {
                let len = chars[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == 'µ'))
                    .map_or(chars.len() - i, |p| p + 1);
                (Token::Number(chars[i..i + len].iter().collect()), len)
            }
            _ if c.is_alphabetic() || c == '_' => {
                let len = chars[i + 1..]
                    .iter()
                    .position(|c| !(c.is_alphanumeric() || *c == '_' || *c == '.'))
                    .map_or(chars.len() - i, |p| p + 1);
                (Token::Ident(chars[i..i + len].iter().collect()), len)
            }
            _ => return Err(error(col, format!("syntax error: unexpected character {c:?}"))),
        };
        tokens.push((token, col));
        i += len;
    }
    tokens.push((Token::End, chars.len() + 1));
    Ok(tokens)
}

/// A double-quoted string with Go's escapes, from its opening quote; its text and length.
fn quoted(chars: &[char]) -> Result<(String, usize), String> {
    let mut text = String::new();
    let mut i = 1;
    loop {
        let Some(&c) = chars.get(i) else { return Err("syntax error: unterminated string".into()) };
        i += 1;
        match c {
            '"' => return Ok((text, i)),
            '\\' => {
                let Some(&e) = chars.get(i) else { return Err("syntax error: unterminated string".into()) };
                i += 1;
                match e {
                    'n' => text.push('\n'),
                    't' => text.push('\t'),
                    'r' => text.push('\r'),
                    'a' => text.push('\u{7}'),
                    'b' => text.push('\u{8}'),
                    'f' => text.push('\u{c}'),
                    'v' => text.push('\u{b}'),
                    '\\' | '"' | '\'' => text.push(e),
                    'x' | 'u' | 'U' => {
                        let digits = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = chars.get(i..i + digits).unwrap_or_default().iter().collect();
                        let code = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| format!("syntax error: invalid escape \\{e}{hex}"))?;
                        text.push(code);
                        i += digits;
                    }
                    other => return Err(format!("syntax error: invalid escape \\{other}")),
                }
            }
            c => text.push(c),
        }
    }
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.at.min(self.tokens.len() - 1)].0
    }

    fn peek_is(&self, token: &Token) -> bool {
        self.peek() == token
    }

    fn peek_ident(&self, name: &str) -> bool {
        matches!(self.peek(), Token::Ident(n) if n == name)
    }

    /// `and` / `or` between label filters, in any case: Grafana's trace-to-logs writes `OR`.
    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Token::Ident(n) if n.eq_ignore_ascii_case(keyword))
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        self.at = (self.at + 1).min(self.tokens.len() - 1);
        token
    }

    fn error(&self, message: String) -> ParseError {
        ParseError { col: self.tokens[self.at.min(self.tokens.len() - 1)].1, message }
    }

    fn expect(&mut self, token: &Token) -> Result<(), ParseError> {
        if self.peek_is(token) {
            self.next();
            Ok(())
        } else {
            Err(self.error(format!("syntax error: unexpected {}, expecting {token}", self.peek())))
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        match self.peek().clone() {
            Token::Str(text) => {
                self.next();
                Ok(text)
            }
            other => Err(self.error(format!("syntax error: unexpected {other}, expecting string"))),
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        match self.peek().clone() {
            Token::Ident(name) => {
                self.next();
                Ok(name)
            }
            other => Err(self.error(format!("syntax error: unexpected {other}, expecting label name"))),
        }
    }

    fn deeper(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("query nested deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    fn matcher(&mut self) -> Result<Matcher, ParseError> {
        let name = self.ident()?;
        let op = match self.next() {
            Token::Op("=") => MatchOp::Eq,
            Token::Op("!=") => MatchOp::Ne,
            Token::Op("=~") => MatchOp::Re,
            Token::Op("!~") => MatchOp::NotRe,
            other => {
                self.at = self.at.saturating_sub(1);
                return Err(self.error(format!("syntax error: unexpected {other}, expecting = != =~ or !~")));
            }
        };
        let value = self.string()?;
        Ok(Matcher { name, op, value })
    }

    fn log(&mut self) -> Result<LogQuery, ParseError> {
        self.expect(&Token::LBrace)?;
        let mut selector = Vec::new();
        while !self.peek_is(&Token::RBrace) {
            selector.push(self.matcher()?);
            match self.peek() {
                Token::Comma => {
                    self.next();
                }
                Token::RBrace => {}
                other => {
                    return Err(self.error(format!("syntax error: unexpected {other}, expecting , or }}")))
                }
            }
        }
        self.expect(&Token::RBrace)?;
        if selector.is_empty() {
            return Err(self.error("syntax error: a stream selector needs at least one matcher".into()));
        }
        if !selector.iter().any(|m| match m.op {
            MatchOp::Eq => !m.value.is_empty(),
            MatchOp::Re => !regex_matches_empty(&m.value),
            _ => false,
        }) {
            return Err(self.error(
                "queries require at least one regexp or equality matcher that does not have an empty-compatible value. \
                 For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will"
                    .into(),
            ));
        }
        let mut stages = Vec::new();
        loop {
            match self.peek().clone() {
                Token::Op(op @ ("|=" | "!=" | "|~" | "!~")) => {
                    self.next();
                    let op = match op {
                        "|=" => LineOp::Contains,
                        "!=" => LineOp::NotContains,
                        "|~" => LineOp::Matches,
                        _ => LineOp::NotMatches,
                    };
                    let mut values = vec![self.string()?];
                    while self.peek_ident("or") {
                        self.next();
                        values.push(self.string()?);
                    }
                    stages.push(Stage::Line { op, values });
                }
                Token::Pipe => {
                    self.next();
                    stages.push(self.stage()?);
                }
                _ => break,
            }
        }
        Ok(LogQuery { selector, stages })
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        if self.peek_is(&Token::LParen) {
            return Ok(Stage::Filter(self.label_filter()?));
        }
        let keyword = match self.peek() {
            Token::Ident(name) => name.clone(),
            other => return Err(self.error(format!("syntax error: unexpected {other} after |"))),
        };
        let followed_by_op = matches!(self.tokens.get(self.at + 1), Some((Token::Op(_), _)));
        if followed_by_op {
            return Ok(Stage::Filter(self.label_filter()?));
        }
        self.next();
        match keyword.as_str() {
            "json" => Ok(Stage::Json(self.extractions()?)),
            "logfmt" => {
                // Flags Loki accepts and that change nothing here.
                while matches!(self.peek(), Token::Minus) {
                    self.next();
                    self.ident()?;
                }
                Ok(Stage::Logfmt(self.extractions()?))
            }
            "drop" => {
                let mut items = Vec::new();
                loop {
                    let is_matcher = matches!(self.tokens.get(self.at + 1), Some((Token::Op(_), _)));
                    items.push(if is_matcher {
                        DropItem::Matching(self.matcher()?)
                    } else {
                        DropItem::Name(self.ident()?)
                    });
                    if !self.peek_is(&Token::Comma) {
                        break;
                    }
                    self.next();
                }
                Ok(Stage::Drop(items))
            }
            "line_format" => Ok(Stage::LineFormat(self.string()?)),
            "label_format" => {
                let mut items = Vec::new();
                loop {
                    let name = self.ident()?;
                    if self.next() != Token::Op("=") {
                        self.at = self.at.saturating_sub(1);
                        return Err(
                            self.error(format!("syntax error: unexpected {}, expecting =", self.peek()))
                        );
                    }
                    let value = match self.peek().clone() {
                        Token::Str(text) => {
                            self.next();
                            LabelFormat::Template(text)
                        }
                        _ => LabelFormat::Rename(self.ident()?),
                    };
                    items.push((name, value));
                    if !self.peek_is(&Token::Comma) {
                        break;
                    }
                    self.next();
                }
                Ok(Stage::LabelFormat(items))
            }
            other => Err(self.error(format!("not supported: the {other} stage"))),
        }
    }

    /// `| json` / `| logfmt` parameters: `name="path"` or a bare `name`.
    fn extractions(&mut self) -> Result<Vec<(String, String)>, ParseError> {
        let mut items = Vec::new();
        while let Token::Ident(name) = self.peek().clone() {
            if matches!(name.as_str(), "or" | "and") {
                break;
            }
            self.next();
            let path = if self.peek_is(&Token::Op("=")) {
                self.next();
                self.string()?
            } else {
                name.clone()
            };
            items.push((name, path));
            if !self.peek_is(&Token::Comma) {
                break;
            }
            self.next();
        }
        Ok(items)
    }

    /// `a and b or c`, `and` binding tighter, a comma or a space meaning `and`, parentheses.
    fn label_filter(&mut self) -> Result<LabelFilter, ParseError> {
        self.deeper()?;
        let mut filter = self.label_filter_and()?;
        while self.peek_keyword("or") {
            self.next();
            filter = LabelFilter::Or(Box::new(filter), Box::new(self.label_filter_and()?));
        }
        self.depth -= 1;
        Ok(filter)
    }

    fn label_filter_and(&mut self) -> Result<LabelFilter, ParseError> {
        let mut filter = self.label_filter_one()?;
        loop {
            if self.peek_keyword("and") || self.peek_is(&Token::Comma) {
                self.next();
            } else if self.peek_keyword("or")
                || !(matches!(self.peek(), Token::Ident(_)) || self.peek_is(&Token::LParen))
            {
                break;
            }
            filter = LabelFilter::And(Box::new(filter), Box::new(self.label_filter_one()?));
        }
        Ok(filter)
    }

    fn label_filter_one(&mut self) -> Result<LabelFilter, ParseError> {
        if self.peek_is(&Token::LParen) {
            self.next();
            let filter = self.label_filter()?;
            self.expect(&Token::RParen)?;
            return Ok(filter);
        }
        let name = self.ident()?;
        let op = match self.next() {
            Token::Op(op) => op,
            other => {
                self.at = self.at.saturating_sub(1);
                return Err(self.error(format!("syntax error: unexpected {other}, expecting a comparison")));
            }
        };
        match self.peek().clone() {
            Token::Str(value) => {
                self.next();
                let op = match op {
                    "=" | "==" => MatchOp::Eq,
                    "!=" => MatchOp::Ne,
                    "=~" => MatchOp::Re,
                    "!~" => MatchOp::NotRe,
                    other => {
                        return Err(self.error(format!("syntax error: {other} compares numbers, not strings")))
                    }
                };
                Ok(LabelFilter::Text(Matcher { name, op, value }))
            }
            Token::Number(text) => {
                self.next();
                let op = match op {
                    "=" | "==" => CmpOp::Eq,
                    "!=" => CmpOp::Ne,
                    ">" => CmpOp::Gt,
                    ">=" => CmpOp::Ge,
                    "<" => CmpOp::Lt,
                    "<=" => CmpOp::Le,
                    other => {
                        return Err(self.error(format!("syntax error: {other} matches strings, not numbers")))
                    }
                };
                let value = text
                    .parse::<f64>()
                    .ok()
                    .or_else(|| parse_duration(&text).ok().map(|nanos| nanos as f64 / 1e9))
                    .or_else(|| parse_bytes(&text))
                    .ok_or_else(|| {
                        self.error(format!("syntax error: {text:?} is not a number, duration or size"))
                    })?;
                Ok(LabelFilter::Number { name, op, value })
            }
            other => {
                Err(self.error(format!("syntax error: unexpected {other}, expecting a string or a number")))
            }
        }
    }

    /// A metric expression, binary operators by precedence climbing.
    fn metric(&mut self, min_precedence: u8) -> Result<Metric, ParseError> {
        self.deeper()?;
        let mut lhs = self.metric_operand()?;
        loop {
            let (op, precedence) = match self.peek() {
                Token::Plus => (BinaryOp::Add, 1),
                Token::Minus => (BinaryOp::Sub, 1),
                Token::Star => (BinaryOp::Mul, 2),
                Token::Slash => (BinaryOp::Div, 2),
                Token::Ident(name) if matches!(name.as_str(), "and" | "or" | "unless") => {
                    return Err(self.error(format!("not supported: the {name} operator")))
                }
                Token::Op(op) if matches!(*op, "==" | "!=" | ">" | ">=" | "<" | "<=") => {
                    return Err(self.error(format!("not supported: the comparison operator {op}")))
                }
                _ => break,
            };
            if precedence < min_precedence {
                break;
            }
            self.next();
            if self.peek_ident("bool") || self.peek_ident("on") || self.peek_ident("ignoring") {
                return Err(self.error(format!("not supported: {} in a binary operation", self.peek())));
            }
            let rhs = self.metric(precedence + 1)?;
            lhs = Metric::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn metric_operand(&mut self) -> Result<Metric, ParseError> {
        match self.peek().clone() {
            Token::LParen => {
                self.next();
                let inner = self.metric(0)?;
                self.expect(&Token::RParen)?;
                Ok(inner)
            }
            Token::Number(text) => {
                self.next();
                let value = text.parse().map_err(|_| self.error(format!("syntax error: {text:?} is not a number")))?;
                Ok(Metric::Scalar(value))
            }
            Token::Ident(name) => {
                let func = match name.as_str() {
                    "count_over_time" => Some(RangeFunc::CountOverTime),
                    "rate" => Some(RangeFunc::Rate),
                    "bytes_over_time" => Some(RangeFunc::BytesOverTime),
                    "bytes_rate" => Some(RangeFunc::BytesRate),
                    _ => None,
                };
                if let Some(func) = func {
                    self.next();
                    self.expect(&Token::LParen)?;
                    let log = self.log()?;
                    self.expect(&Token::LBracket)?;
                    let range = match self.next() {
                        Token::Number(text) | Token::Ident(text) => text,
                        other => {
                            self.at = self.at.saturating_sub(1);
                            return Err(self.error(format!("syntax error: unexpected {other}, expecting a duration")));
                        }
                    };
                    let range_nanos = parse_duration(&range).map_err(|m| self.error(format!("syntax error: {m}")))?;
                    if range_nanos <= 0 {
                        return Err(self.error("syntax error: a range must be positive".into()));
                    }
                    self.expect(&Token::RBracket)?;
                    if self.peek_ident("offset") {
                        return Err(self.error("not supported: offset".into()));
                    }
                    self.expect(&Token::RParen)?;
                    return Ok(Metric::Range { func, log, range_nanos });
                }
                let op = match name.as_str() {
                    "sum" => AggregateOp::Sum,
                    "count" => AggregateOp::Count,
                    "avg" => AggregateOp::Avg,
                    "max" => AggregateOp::Max,
                    "min" => AggregateOp::Min,
                    "topk" => AggregateOp::Topk,
                    "bottomk" => AggregateOp::Bottomk,
                    "vector" => {
                        self.next();
                        self.expect(&Token::LParen)?;
                        let Metric::Scalar(value) = self.metric_operand()? else {
                            return Err(self.error("syntax error: vector() takes a number".into()));
                        };
                        self.expect(&Token::RParen)?;
                        return Ok(Metric::Vector(value));
                    }
                    other => return Err(self.error(format!("not supported: {other}"))),
                };
                self.next();
                let mut grouping = self.grouping()?;
                self.expect(&Token::LParen)?;
                let param = if matches!(op, AggregateOp::Topk | AggregateOp::Bottomk) {
                    let Metric::Scalar(k) = self.metric_operand()? else {
                        return Err(self.error(format!("syntax error: {name} takes a number first")));
                    };
                    if k < 1.0 || k.fract() != 0.0 {
                        return Err(self.error(format!("syntax error: {name}'s k must be a whole number of at least 1")));
                    }
                    self.expect(&Token::Comma)?;
                    Some(k)
                } else {
                    None
                };
                let inner = self.metric(0)?;
                self.expect(&Token::RParen)?;
                if grouping.is_none() {
                    grouping = self.grouping()?;
                }
                Ok(Metric::Aggregate { op, grouping, param, inner: Box::new(inner) })
            }
            Token::LBrace => Err(self.error(
                "syntax error: a log query cannot be used as a metric; wrap it in count_over_time(...[range]) or rate".into(),
            )),
            other => Err(self.error(format!("syntax error: unexpected {other}"))),
        }
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, ParseError> {
        let by = if self.peek_ident("by") {
            true
        } else if self.peek_ident("without") {
            false
        } else {
            return Ok(None);
        };
        self.next();
        self.expect(&Token::LParen)?;
        let mut names = Vec::new();
        while !self.peek_is(&Token::RParen) {
            names.push(self.ident()?);
            if !self.peek_is(&Token::RParen) {
                self.expect(&Token::Comma)?;
            }
        }
        self.expect(&Token::RParen)?;
        Ok(Some(if by { Grouping::By(names) } else { Grouping::Without(names) }))
    }
}

/// Whether a regex matcher's value could match the empty string, judged as Loki does for the
/// common forms (`.*`, `|` alternatives with an empty one, `x?`/`x*` alone).
fn regex_matches_empty(pattern: &str) -> bool {
    pattern.is_empty()
        || pattern == ".*"
        || pattern.split('|').any(str::is_empty)
        || (pattern.len() <= 3 && (pattern.ends_with('*') || pattern.ends_with('?')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, op: MatchOp, value: &str) -> Matcher {
        Matcher { name: name.into(), op, value: value.into() }
    }

    fn log(query: &str) -> LogQuery {
        match parse(query) {
            Ok(Query::Log(log)) => log,
            other => panic!("{query}: {other:?}"),
        }
    }

    fn metric(query: &str) -> Metric {
        match parse(query) {
            Ok(Query::Metric(metric)) => metric,
            other => panic!("{query}: {other:?}"),
        }
    }

    fn error(query: &str) -> String {
        parse(query).expect_err(query).to_string()
    }

    #[test]
    fn stream_selectors_take_every_matcher() {
        assert_eq!(
            log(r#"{service_name="checkout", env!="dev", host=~"web-.+", zone!~"eu.*"}"#).selector,
            [
                m("service_name", MatchOp::Eq, "checkout"),
                m("env", MatchOp::Ne, "dev"),
                m("host", MatchOp::Re, "web-.+"),
                m("zone", MatchOp::NotRe, "eu.*"),
            ]
        );
        assert_eq!(log(r#"{a="x\"y\n\u00e9"}"#).selector, [m("a", MatchOp::Eq, "x\"y\né")]);
        assert_eq!(log("{a=`raw\\d+`}").selector, [m("a", MatchOp::Eq, "raw\\d+")]);
    }

    #[test]
    fn line_filters_and_parsers_and_formats_in_order() {
        let parsed = log(
            r#"{app="api"} |= "error" != "timeout" |~ "5\\d\\d" !~ "health" |= "a" or "b" | json | logfmt
               | json status="response.status", method | drop __error__, __error_details__, level="debug"
               | line_format "{{.method}} {{.status}}" | label_format svc=service_name, msg="{{ .msg }}""#,
        );
        assert_eq!(
            parsed.stages,
            [
                Stage::Line { op: LineOp::Contains, values: vec!["error".into()] },
                Stage::Line { op: LineOp::NotContains, values: vec!["timeout".into()] },
                Stage::Line { op: LineOp::Matches, values: vec!["5\\d\\d".into()] },
                Stage::Line { op: LineOp::NotMatches, values: vec!["health".into()] },
                Stage::Line { op: LineOp::Contains, values: vec!["a".into(), "b".into()] },
                Stage::Json(vec![]),
                Stage::Logfmt(vec![]),
                Stage::Json(vec![
                    ("status".into(), "response.status".into()),
                    ("method".into(), "method".into())
                ]),
                Stage::Drop(vec![
                    DropItem::Name("__error__".into()),
                    DropItem::Name("__error_details__".into()),
                    DropItem::Matching(m("level", MatchOp::Eq, "debug")),
                ]),
                Stage::LineFormat("{{.method}} {{.status}}".into()),
                Stage::LabelFormat(vec![
                    ("svc".into(), LabelFormat::Rename("service_name".into())),
                    ("msg".into(), LabelFormat::Template("{{ .msg }}".into())),
                ]),
            ]
        );
    }

    #[test]
    fn label_filters_combine_with_and_or_and_compare_numbers_durations_and_sizes() {
        let parsed = log(
            r#"{a="b"} | level="error" and status >= 500 or duration > 1.5s, size < 10KB | (x="1" or y!~"z.*")"#,
        );
        let text = |name: &str, op, value: &str| LabelFilter::Text(m(name, op, value));
        let number = |name: &str, op, value| LabelFilter::Number { name: name.into(), op, value };
        assert_eq!(
            parsed.stages,
            [
                Stage::Filter(LabelFilter::Or(
                    Box::new(LabelFilter::And(
                        Box::new(text("level", MatchOp::Eq, "error")),
                        Box::new(number("status", CmpOp::Ge, 500.0))
                    )),
                    Box::new(LabelFilter::And(
                        Box::new(number("duration", CmpOp::Gt, 1.5)),
                        Box::new(number("size", CmpOp::Lt, 10_000.0))
                    )),
                )),
                Stage::Filter(LabelFilter::Or(
                    Box::new(text("x", MatchOp::Eq, "1")),
                    Box::new(text("y", MatchOp::NotRe, "z.*"))
                )),
            ]
        );
    }

    #[test]
    fn the_trace_to_logs_forms_grafana_sends_parse() {
        // grafana public/app/features/explore/TraceView/createSpanLink.tsx, getQueryForLoki:
        // the tags alone; by trace id (`OR` in older versions, `or` in newer); by trace and span id.
        let (trace, span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
        assert!(log(r#"{service_name="checkout", namespace="shop"}"#).stages.is_empty());
        let contains = |label: &str, id: &str| {
            Stage::LabelFormat(vec![(
                label.into(),
                LabelFormat::Template(format!("{{{{ contains \"{id}\" __line__  }}}}")),
            )])
        };
        let either = |label: &str, field: &str, id: &str| {
            Stage::Filter(LabelFilter::Or(
                Box::new(LabelFilter::Text(m(label, MatchOp::Eq, "true"))),
                Box::new(LabelFilter::Text(m(field, MatchOp::Eq, id))),
            ))
        };
        for or in ["OR", "or"] {
            let by_trace = log(&format!(
                "{{service_name=\"checkout\"}} | label_format log_line_contains_trace_id=`{{{{ contains \"{trace}\" __line__  }}}}` \
                 | log_line_contains_trace_id=\"true\" {or} trace_id=\"{trace}\""
            ));
            assert_eq!(
                by_trace.stages,
                [
                    contains("log_line_contains_trace_id", trace),
                    either("log_line_contains_trace_id", "trace_id", trace)
                ]
            );
            let by_span = log(&format!(
                "{{service_name=\"checkout\"}} | label_format log_line_contains_trace_id=`{{{{ contains \"{trace}\" __line__  }}}}` \
                 | log_line_contains_trace_id=\"true\" {or} trace_id=\"{trace}\" \
                 | label_format log_line_contains_span_id=`{{{{ contains \"{span}\" __line__  }}}}` \
                 | log_line_contains_span_id=\"true\" {or} span_id=\"{span}\""
            ));
            assert_eq!(by_span.stages.len(), 4);
            assert_eq!(by_span.stages[3], either("log_line_contains_span_id", "span_id", span));
        }
    }

    #[test]
    fn metric_queries_nest_aggregations_over_ranges() {
        assert_eq!(
            metric(
                r#"sum by (level, detected_level) (count_over_time({service_name="api"} | drop __error__ [1m]))"#
            ),
            Metric::Aggregate {
                op: AggregateOp::Sum,
                grouping: Some(Grouping::By(vec!["level".into(), "detected_level".into()])),
                param: None,
                inner: Box::new(Metric::Range {
                    func: RangeFunc::CountOverTime,
                    log: LogQuery {
                        selector: vec![m("service_name", MatchOp::Eq, "api")],
                        stages: vec![Stage::Drop(vec![DropItem::Name("__error__".into())])],
                    },
                    range_nanos: 60_000_000_000,
                }),
            }
        );
        let topk = metric(r#"topk(3, sum(rate({a="b"}[5m])) without (host))"#);
        assert!(
            matches!(&topk, Metric::Aggregate { op: AggregateOp::Topk, param: Some(k), .. } if *k == 3.0),
            "{topk:?}"
        );
        let grouped_after = metric(r#"avg(bytes_over_time({a="b"}[1h30m])) by (pod)"#);
        assert!(
            matches!(&grouped_after, Metric::Aggregate { op: AggregateOp::Avg, grouping: Some(Grouping::By(g)), .. } if g == &["pod".to_owned()]),
            "{grouped_after:?}"
        );
        // The data source's health check (grafana pkg/tsdb/loki/healthcheck.go).
        assert_eq!(
            metric("vector(1)+vector(1)"),
            Metric::Binary {
                op: BinaryOp::Add,
                lhs: Box::new(Metric::Vector(1.0)),
                rhs: Box::new(Metric::Vector(1.0))
            }
        );
        assert_eq!(
            metric(r#"count_over_time({a="b"}[1m]) * 2 + 1"#),
            Metric::Binary {
                op: BinaryOp::Add,
                lhs: Box::new(Metric::Binary {
                    op: BinaryOp::Mul,
                    lhs: Box::new(Metric::Range {
                        func: RangeFunc::CountOverTime,
                        log: LogQuery { selector: vec![m("a", MatchOp::Eq, "b")], stages: vec![] },
                        range_nanos: 60_000_000_000
                    }),
                    rhs: Box::new(Metric::Scalar(2.0)),
                }),
                rhs: Box::new(Metric::Scalar(1.0)),
            }
        );
    }

    #[test]
    fn what_is_wrong_or_not_supported_is_refused_naming_it() {
        for (query, expected) in [
            (r#"{a="b""#, "expecting , or }"),
            (r#"{a="b"} |= "x"#, "unterminated string"),
            (r#"{a=~".*"}"#, "at least one regexp or equality matcher"),
            (r#"{a=""}"#, "at least one regexp or equality matcher"),
            ("{}", "at least one matcher"),
            (r#"{a="b"} | pattern "<ip> <_>""#, "not supported: the pattern stage"),
            (r#"{a="b"} | unpack"#, "not supported: the unpack stage"),
            (r#"quantile_over_time(0.99, {a="b"} | unwrap d [1m])"#, "not supported: quantile_over_time"),
            (r#"count_over_time({a="b"}[1m] offset 1h)"#, "not supported: offset"),
            (r#"count_over_time({a="b"}[1m]) > 5"#, "not supported: the comparison operator >"),
            (r#"count_over_time({a="b"}[1m]) and vector(1)"#, "not supported: the and operator"),
            (r#"count_over_time({a="b"}[soon])"#, "not a duration"),
            (r#"sum({a="b"})"#, "cannot be used as a metric"),
            (r#"topk(0, count_over_time({a="b"}[1m]))"#, "k must be a whole number"),
            (r#"{a="b"} | level > "x""#, "compares numbers"),
            (r#"{a="b"} extra"#, "unexpected extra"),
            ("{a=\"b\"} |= \"\\q\"", "invalid escape"),
        ] {
            let message = error(query);
            assert!(message.starts_with("parse error at line 1, col "), "{query}: {message}");
            assert!(message.contains(expected), "{query}: {message} (expected {expected:?})");
        }
        let deep = format!("{}vector(1){}", "(".repeat(100), ")".repeat(100));
        assert!(error(&deep).contains("nested deeper"));
        assert!(error(&"x".repeat(MAX_QUERY_BYTES + 1)).contains("longer than"));
    }

    proptest::proptest! {
        /// No input panics the parser: every one is a query or an error.
        #[test]
        fn any_input_is_parsed_or_refused(query in "[{}()\\[\\]|=~!<>\"`a-z_0-9 ,.+*/#-]{0,120}") {
            let _ = parse(&query);
        }

        #[test]
        fn any_text_is_parsed_or_refused(query in "\\PC{0,200}") {
            let _ = parse(&query);
        }
    }

    #[test]
    fn durations_read_as_prometheus_writes_them() {
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("250ms"), Ok(250_000_000));
        assert_eq!(parse_duration("2d"), Ok(172_800_000_000_000));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }
}
