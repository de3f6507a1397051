//! LogQL's log pipeline and its metric functions, run in Rust over the log records the Loki
//! API's statement reads (`query::loki`): line filters, `json`, `logfmt`, `drop`,
//! `line_format`, `label_format` and label filters, each record's labels kept apart by where
//! they came from (stream, structured metadata, parsed) as Loki's categorized answers need;
//! then the range functions over steps and the vector aggregations and arithmetic over
//! series. Pure functions of their input, run on the blocking pool.

use std::collections::{BTreeMap, HashMap};

use regex::Regex;

use super::{
    logql::{
        parse_bytes, parse_duration, AggregateOp, BinaryOp, CmpOp, DropItem, Grouping, LabelFilter,
        LabelFormat, LineOp, RangeFunc, Stage,
    },
    loki::{label_name, Compiled},
};

/// Where a label came from: Loki's categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Stream,
    Metadata,
    Parsed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub value: String,
    pub origin: Origin,
}

pub type Labels = BTreeMap<String, Label>;

/// The label a parser sets on a line it could not read, as Loki names it.
pub const ERROR: &str = "__error__";
pub const ERROR_DETAILS: &str = "__error_details__";

/// One log record as a pipeline sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub time: i64,
    pub line: String,
    pub labels: Labels,
}

/// Why a pipeline could not be built: a message for the 400 answer.
pub type Refusal = String;

/// A pipeline ready to run: regexes compiled, templates parsed.
pub struct Pipeline {
    steps: Vec<Step>,
}

enum Step {
    Line { op: LineOp, needles: Vec<String>, regexes: Vec<Regex> },
    Json(Vec<(String, Vec<PathPart>)>),
    Logfmt(Vec<(String, String)>),
    Drop(Vec<Dropped>),
    LineFormat(Template),
    LabelFormat(Vec<(String, Formatted)>),
    Filter(Filter),
}

enum Dropped {
    Name(String),
    Matching(Compiled),
}

enum Formatted {
    Rename(String),
    Template(Template),
}

enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Text(Compiled),
    Number { name: String, op: CmpOp, value: f64 },
}

/// Most bytes a line filter's regex may compile to.
const REGEX_BYTES: usize = 1 << 20;

fn regex(pattern: &str) -> Result<Regex, Refusal> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_BYTES)
        .build()
        .map_err(|e| format!("invalid regex {pattern:?}: {e}"))
}

impl Pipeline {
    /// # Errors
    /// A bad regex or a template construct not supported, named.
    pub fn new(stages: &[Stage]) -> Result<Self, Refusal> {
        let steps = stages.iter().map(step).collect::<Result<_, _>>()?;
        Ok(Self { steps })
    }

    /// Runs `entry` through every stage: `None` when a stage drops it.
    pub fn run(&self, mut entry: Entry) -> Option<Entry> {
        for step in &self.steps {
            match step {
                Step::Line { op, needles, regexes } => {
                    let any = match op {
                        LineOp::Contains | LineOp::NotContains => {
                            needles.iter().any(|n| entry.line.contains(n.as_str()))
                        }
                        LineOp::Matches | LineOp::NotMatches => {
                            regexes.iter().any(|r| r.is_match(&entry.line))
                        }
                    };
                    let keep = matches!(op, LineOp::Contains | LineOp::Matches) == any;
                    if !keep {
                        return None;
                    }
                }
                Step::Json(fields) => json(&mut entry, fields),
                Step::Logfmt(fields) => logfmt(&mut entry, fields),
                Step::Drop(items) => {
                    for item in items {
                        match item {
                            Dropped::Name(name) => {
                                entry.labels.remove(name);
                            }
                            Dropped::Matching(matcher) => {
                                let hit =
                                    entry.labels.get(matcher.name()).is_some_and(|l| matcher.test(&l.value));
                                if hit {
                                    entry.labels.remove(matcher.name());
                                }
                            }
                        }
                    }
                }
                Step::LineFormat(template) => entry.line = template.render(&entry),
                Step::LabelFormat(formats) => {
                    let mut set = Vec::with_capacity(formats.len());
                    for (name, format) in formats {
                        match format {
                            Formatted::Rename(old) => {
                                if let Some(label) = entry.labels.remove(old) {
                                    set.push((name.clone(), label.value));
                                }
                            }
                            Formatted::Template(template) => {
                                set.push((name.clone(), template.render(&entry)))
                            }
                        }
                    }
                    for (name, value) in set {
                        entry.labels.insert(name, Label { value, origin: Origin::Parsed });
                    }
                }
                Step::Filter(filter) => match filter.test(&entry.labels) {
                    Some(true) => {}
                    Some(false) => return None,
                    None => {
                        entry.labels.insert(
                            ERROR.into(),
                            Label { value: "LabelFilterErr".into(), origin: Origin::Parsed },
                        );
                    }
                },
            }
        }
        Some(entry)
    }
}

fn step(stage: &Stage) -> Result<Step, Refusal> {
    Ok(match stage {
        Stage::Line { op, values } => Step::Line {
            op: *op,
            needles: values.clone(),
            regexes: match op {
                LineOp::Matches | LineOp::NotMatches => {
                    values.iter().map(|v| regex(v)).collect::<Result<_, _>>()?
                }
                _ => Vec::new(),
            },
        },
        Stage::Json(fields) => Step::Json(
            fields
                .iter()
                .map(|(name, path)| Ok((name.clone(), json_path(path)?)))
                .collect::<Result<_, Refusal>>()?,
        ),
        Stage::Logfmt(fields) => Step::Logfmt(fields.clone()),
        Stage::Drop(items) => Step::Drop(
            items
                .iter()
                .map(|item| match item {
                    DropItem::Name(name) => Ok(Dropped::Name(name.clone())),
                    DropItem::Matching(m) => Compiled::new(m).map(Dropped::Matching),
                })
                .collect::<Result<_, _>>()?,
        ),
        Stage::LineFormat(text) => Step::LineFormat(Template::parse(text)?),
        Stage::LabelFormat(formats) => Step::LabelFormat(
            formats
                .iter()
                .map(|(name, format)| {
                    Ok((
                        name.clone(),
                        match format {
                            LabelFormat::Rename(old) => Formatted::Rename(old.clone()),
                            LabelFormat::Template(text) => Formatted::Template(Template::parse(text)?),
                        },
                    ))
                })
                .collect::<Result<_, Refusal>>()?,
        ),
        Stage::Filter(filter) => Step::Filter(compile_filter(filter)?),
    })
}

fn compile_filter(filter: &LabelFilter) -> Result<Filter, Refusal> {
    Ok(match filter {
        LabelFilter::And(a, b) => Filter::And(Box::new(compile_filter(a)?), Box::new(compile_filter(b)?)),
        LabelFilter::Or(a, b) => Filter::Or(Box::new(compile_filter(a)?), Box::new(compile_filter(b)?)),
        LabelFilter::Text(m) => Filter::Text(Compiled::new(m)?),
        LabelFilter::Number { name, op, value } => {
            Filter::Number { name: name.clone(), op: *op, value: *value }
        }
    })
}

impl Filter {
    /// Whether the labels pass; `None` when a label compared as a number is not one.
    fn test(&self, labels: &Labels) -> Option<bool> {
        match self {
            Filter::And(a, b) => Some(a.test(labels)? && b.test(labels)?),
            Filter::Or(a, b) => Some(a.test(labels)? || b.test(labels)?),
            Filter::Text(m) => Some(m.test(labels.get(m.name()).map_or("", |l| l.value.as_str()))),
            Filter::Number { name, op, value } => {
                // Loki drops a line without the label, and marks one whose label is no number.
                let Some(label) = labels.get(name) else { return Some(false) };
                let number = number_of(&label.value)?;
                Some(match op {
                    CmpOp::Eq => number == *value,
                    CmpOp::Ne => number != *value,
                    CmpOp::Gt => number > *value,
                    CmpOp::Ge => number >= *value,
                    CmpOp::Lt => number < *value,
                    CmpOp::Le => number <= *value,
                })
            }
        }
    }
}

/// A label's value as a number: plain, a duration (in seconds) or a size (in bytes).
fn number_of(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Ok(n) = text.parse::<f64>() {
        return Some(n);
    }
    if let Ok(nanos) = parse_duration(text) {
        return Some(nanos as f64 / 1e9);
    }
    parse_bytes(text)
}

/// Sets a parsed label the way Loki's parsers do: a name taken by a stream label or metadata
/// gets `_extracted` after it.
fn set_parsed(labels: &mut Labels, name: String, value: String) {
    let name = match labels.get(&name) {
        Some(l) if l.origin != Origin::Parsed => format!("{name}_extracted"),
        _ => name,
    };
    labels.insert(name, Label { value, origin: Origin::Parsed });
}

fn parse_error(entry: &mut Entry, kind: &str, details: String) {
    entry.labels.insert(ERROR.into(), Label { value: kind.into(), origin: Origin::Parsed });
    entry.labels.insert(ERROR_DETAILS.into(), Label { value: details, origin: Origin::Parsed });
}

#[derive(Debug, Clone, PartialEq)]
enum PathPart {
    Key(String),
    Index(usize),
}

/// A `| json name="path"` path: `a.b`, `a[0]`, `a["b c"]`.
fn json_path(path: &str) -> Result<Vec<PathPart>, Refusal> {
    let mut parts = Vec::new();
    let mut rest = path;
    let bad = || format!("invalid json path {path:?}");
    while !rest.is_empty() {
        if let Some(tail) = rest.strip_prefix('[') {
            let close = tail.find(']').ok_or_else(bad)?;
            let inside = tail[..close].trim();
            if let Some(key) = inside.strip_prefix('"').and_then(|k| k.strip_suffix('"')) {
                parts.push(PathPart::Key(key.to_owned()));
            } else {
                parts.push(PathPart::Index(inside.parse().map_err(|_| bad())?));
            }
            rest = &tail[close + 1..];
        } else {
            let rest_trimmed = rest.strip_prefix('.').unwrap_or(rest);
            let end = rest_trimmed.find(['.', '[']).unwrap_or(rest_trimmed.len());
            if end == 0 {
                return Err(bad());
            }
            parts.push(PathPart::Key(rest_trimmed[..end].to_owned()));
            rest = &rest_trimmed[end..];
        }
    }
    Ok(parts)
}

/// A JSON value as a label: strings as they are, anything else as its JSON.
fn json_label(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn json(entry: &mut Entry, fields: &[(String, Vec<PathPart>)]) {
    let parsed: serde_json::Value = match serde_json::from_str(&entry.line) {
        Ok(value @ serde_json::Value::Object(_)) => value,
        Ok(_) => return parse_error(entry, "JSONParserErr", "the line is not a JSON object".into()),
        Err(e) => return parse_error(entry, "JSONParserErr", e.to_string()),
    };
    if fields.is_empty() {
        let mut found = Vec::new();
        flatten(&parsed, "", &mut found);
        for (name, value) in found {
            set_parsed(&mut entry.labels, name, value);
        }
        return;
    }
    for (name, path) in fields {
        let mut at = Some(&parsed);
        for part in path {
            at = at.and_then(|v| match part {
                PathPart::Key(k) => v.get(k.as_str()),
                PathPart::Index(i) => v.get(*i),
            });
        }
        if let Some(value) = at {
            set_parsed(&mut entry.labels, name.clone(), json_label(value));
        }
    }
}

/// Every scalar of a JSON object, nested objects' keys joined with `_`, as Loki's `| json`
/// names them; arrays are left out, as Loki leaves them.
fn flatten(value: &serde_json::Value, prefix: &str, out: &mut Vec<(String, String)>) {
    let serde_json::Value::Object(map) = value else { return };
    for (key, value) in map {
        let name = label_name(&format!("{prefix}{key}"));
        match value {
            serde_json::Value::Object(_) => flatten(value, &format!("{name}_"), out),
            serde_json::Value::Array(_) => {}
            serde_json::Value::Null => out.push((name, String::new())),
            other => out.push((name, json_label(other))),
        }
    }
}

fn logfmt(entry: &mut Entry, fields: &[(String, String)]) {
    let pairs = match logfmt_pairs(&entry.line) {
        Ok(pairs) => pairs,
        Err(details) => return parse_error(entry, "LogfmtParserErr", details),
    };
    if fields.is_empty() {
        for (key, value) in pairs {
            set_parsed(&mut entry.labels, label_name(&key), value);
        }
    } else {
        for (name, key) in fields {
            if let Some((_, value)) = pairs.iter().rev().find(|(k, _)| k == key) {
                set_parsed(&mut entry.labels, name.clone(), value.clone());
            }
        }
    }
}

/// `key=value key2="quoted \"value\"" flag` as pairs (a bare key's value is empty).
fn logfmt_pairs(line: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut end = start;
        while let Some(&(i, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            if c == '"' {
                return Err(format!("unexpected '\"' at {i}"));
            }
            end = i + c.len_utf8();
            chars.next();
        }
        let key = line[start..end].to_owned();
        if key.is_empty() {
            return Err(format!("unexpected '=' at {start}"));
        }
        let mut value = String::new();
        if matches!(chars.peek(), Some((_, '='))) {
            chars.next();
            if matches!(chars.peek(), Some((_, '"'))) {
                chars.next();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, 't')) => value.push('\t'),
                            Some((_, 'r')) => value.push('\r'),
                            Some((_, other)) => value.push(other),
                            None => break,
                        },
                        other => value.push(other),
                    }
                }
                if !closed {
                    return Err("unterminated quoted value".into());
                }
            } else {
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// A Go text/template as LogQL's `line_format` and `label_format` take them, the subset
/// Grafana and people write: text, `{{ .label }}`, `{{ __line__ }}`, `{{ __timestamp__ }}`,
/// string literals, functions (`contains`, `hasPrefix`, `hasSuffix`, `ToUpper`, `ToLower`,
/// `upper`, `lower`, `trim`, `trimSpace`, `replace`, `default`) and `|` pipes, with `{{-`/`-}}`
/// trimming. Anything else (`if`, `range`, variables) is refused, named.
pub struct Template {
    parts: Vec<Part>,
}

enum Part {
    Text(String),
    Action(Vec<Command>),
}

/// One command of a pipe: a function and its arguments, or a single value.
struct Command {
    function: Option<Function>,
    args: Vec<Arg>,
}

#[derive(Clone, Copy)]
enum Function {
    Contains,
    HasPrefix,
    HasSuffix,
    Upper,
    Lower,
    Trim,
    Replace,
    Default,
}

enum Arg {
    Label(String),
    Line,
    Timestamp,
    Literal(String),
}

impl Template {
    /// # Errors
    /// What is not supported, named.
    pub fn parse(text: &str) -> Result<Self, Refusal> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let mut before = &rest[..open];
            let mut inner_start = open + 2;
            if rest[inner_start..].starts_with('-') {
                before = before.trim_end();
                inner_start += 1;
            }
            if !before.is_empty() {
                parts.push(Part::Text(before.to_owned()));
            }
            let close = rest[inner_start..]
                .find("}}")
                .map(|c| c + inner_start)
                .ok_or_else(|| format!("template {text:?}: an action is not closed"))?;
            let mut inner = &rest[inner_start..close];
            let mut after = &rest[close + 2..];
            if let Some(trimmed) = inner.strip_suffix('-') {
                inner = trimmed;
                after = after.trim_start();
            }
            parts.push(Part::Action(pipe(inner).map_err(|m| format!("template {text:?}: {m}"))?));
            rest = after;
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    pub fn render(&self, entry: &Entry) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Action(commands) => {
                    let mut piped: Option<String> = None;
                    for command in commands {
                        let mut args: Vec<String> =
                            command.args.iter().map(|a| arg_value(a, entry)).collect();
                        if let Some(value) = piped.take() {
                            args.push(value);
                        }
                        piped = Some(match command.function {
                            None => args.pop().unwrap_or_default(),
                            Some(f) => call(f, &args),
                        });
                    }
                    out.push_str(&piped.unwrap_or_default());
                }
            }
        }
        out
    }
}

fn arg_value(arg: &Arg, entry: &Entry) -> String {
    match arg {
        Arg::Label(name) => entry.labels.get(name).map(|l| l.value.clone()).unwrap_or_default(),
        Arg::Line => entry.line.clone(),
        Arg::Timestamp => {
            let secs = entry.time.div_euclid(1_000_000_000);
            let nanos = entry.time.rem_euclid(1_000_000_000) as u32;
            std::time::UNIX_EPOCH
                .checked_add(std::time::Duration::new(secs.max(0) as u64, nanos))
                .map(|t| humantime::format_rfc3339_nanos(t).to_string())
                .unwrap_or_default()
        }
        Arg::Literal(text) => text.clone(),
    }
}

fn call(function: Function, args: &[String]) -> String {
    let arg = |i: usize| args.get(i).map_or("", String::as_str);
    let last = args.last().map_or("", String::as_str);
    match function {
        // Sprig's argument order: the value last, so that it can be piped in.
        Function::Contains => last.contains(arg(0)).to_string(),
        Function::HasPrefix => last.starts_with(arg(0)).to_string(),
        Function::HasSuffix => last.ends_with(arg(0)).to_string(),
        Function::Upper => last.to_uppercase(),
        Function::Lower => last.to_lowercase(),
        Function::Trim => last.trim().to_owned(),
        Function::Replace => last.replace(arg(0), arg(1)),
        Function::Default => {
            if args.len() >= 2 && !last.is_empty() {
                last.to_owned()
            } else {
                arg(0).to_owned()
            }
        }
    }
}

/// The commands of one action, split on `|` outside string literals.
fn pipe(inner: &str) -> Result<Vec<Command>, String> {
    let words = words(inner)?;
    let mut commands = Vec::new();
    for group in words.split(|w| matches!(w, Word::Pipe)) {
        let mut group = group.iter();
        let Some(head) = group.next() else { return Err("an empty command".into()) };
        let (function, mut args) = match head {
            Word::Bare(name) if !name.starts_with('.') && name != "__line__" && name != "__timestamp__" => {
                let function = match name.as_str() {
                    "contains" => Function::Contains,
                    "hasPrefix" => Function::HasPrefix,
                    "hasSuffix" => Function::HasSuffix,
                    "ToUpper" | "upper" => Function::Upper,
                    "ToLower" | "lower" => Function::Lower,
                    "trim" | "trimSpace" | "TrimSpace" => Function::Trim,
                    "replace" | "Replace" => Function::Replace,
                    "default" => Function::Default,
                    other => return Err(format!("not supported: template function or keyword {other:?}")),
                };
                (Some(function), Vec::new())
            }
            other => (None, vec![argument(other)?]),
        };
        for word in group {
            args.push(argument(word)?);
        }
        if function.is_none() && args.len() > 1 {
            return Err("a value cannot take arguments".into());
        }
        commands.push(Command { function, args });
    }
    if commands.is_empty() {
        return Err("an empty action".into());
    }
    Ok(commands)
}

fn argument(word: &Word) -> Result<Arg, String> {
    match word {
        Word::Literal(text) => Ok(Arg::Literal(text.clone())),
        Word::Bare(name) if name == "__line__" => Ok(Arg::Line),
        Word::Bare(name) if name == "__timestamp__" => Ok(Arg::Timestamp),
        Word::Bare(name) => match name.strip_prefix('.') {
            Some(label) if !label.is_empty() && !label.contains('.') => Ok(Arg::Label(label.to_owned())),
            _ => Err(format!("not supported: template argument {name:?}")),
        },
        Word::Pipe => Err("a misplaced '|'".into()),
    }
}

enum Word {
    Bare(String),
    Literal(String),
    Pipe,
}

fn words(text: &str) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '|' => {
                chars.next();
                words.push(Word::Pipe);
            }
            '"' | '`' => {
                let quote = c;
                chars.next();
                let mut literal = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    if c == quote {
                        closed = true;
                        break;
                    }
                    if c == '\\' && quote == '"' {
                        match chars.next() {
                            Some('n') => literal.push('\n'),
                            Some('t') => literal.push('\t'),
                            Some(other) => literal.push(other),
                            None => break,
                        }
                    } else {
                        literal.push(c);
                    }
                }
                if !closed {
                    return Err("an unterminated string".into());
                }
                words.push(Word::Literal(literal));
            }
            '(' | ')' | '$' | ':' | '=' => return Err(format!("not supported: {c:?} in a template")),
            _ => {
                let mut bare = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '|' || c == '"' {
                        break;
                    }
                    bare.push(c);
                    chars.next();
                }
                words.push(Word::Bare(bare));
            }
        }
    }
    Ok(words)
}

// ----- metric queries -----

/// The instants a metric query is evaluated at: `start`, `start + step`, ... up to `end`.
#[derive(Debug, Clone, Copy)]
pub struct Steps {
    pub start: i64,
    pub step: i64,
    pub count: usize,
}

/// Most points one series may have, as Loki allows.
pub const MAX_POINTS: i64 = 11_000;

impl Steps {
    /// # Errors
    /// Too many points, or a step that is not positive.
    pub fn new(start: i64, end: i64, step: i64) -> Result<Self, Refusal> {
        if step <= 0 {
            return Err(
                "zero or negative query resolution step widths are not accepted. Try a positive integer"
                    .into(),
            );
        }
        let count = (i128::from(end) - i128::from(start)) / i128::from(step) + 1;
        if count > i128::from(MAX_POINTS) {
            return Err(format!(
                "exceeded maximum resolution of {MAX_POINTS} points per timeseries. Try decreasing the query resolution (?step=XX)"
            ));
        }
        Ok(Self { start, step, count: count.max(1) as usize })
    }

    pub fn at(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    /// The points whose window `(t - range, t]` holds `time`, as an index range.
    fn covering(&self, time: i64, range: i64) -> Option<(usize, usize)> {
        // In i128: a stored time and a range near i64's ends must not wrap.
        let (time, range, start, step) =
            (i128::from(time), i128::from(range), i128::from(self.start), i128::from(self.step));
        let first = (time - start + step - 1).div_euclid(step).max(0);
        let last = (time + range - 1 - start).div_euclid(step).min(self.count as i128 - 1);
        (first <= last).then_some((first as usize, last as usize))
    }
}

/// A series: its labels and a value or nothing at each step.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<Option<f64>>,
}

/// A range function's sums over its windows, per series, as samples arrive in any order:
/// each sample adds to the first covering point and takes back after the last (a difference
/// array), so a sample costs the same whatever the range and step.
pub struct Windows {
    func: RangeFunc,
    range: i64,
    steps: Steps,
    series: HashMap<BTreeMap<String, String>, (Vec<f64>, Vec<i64>)>,
}

impl Windows {
    pub fn new(func: RangeFunc, range: i64, steps: Steps) -> Self {
        Self { func, range, steps, series: HashMap::new() }
    }

    /// Series so far: each holds two arrays of its points.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Bytes one more series takes.
    pub fn series_bytes(&self) -> usize {
        (self.steps.count + 1) * 16
    }

    /// Adds a sample of series `labels` at `time`: one record, or its line's bytes. Returns
    /// whether it started a new series.
    pub fn add(&mut self, labels: BTreeMap<String, String>, time: i64, line_bytes: usize) -> bool {
        let Some((first, last)) = self.steps.covering(time, self.range) else { return false };
        let value = match self.func {
            RangeFunc::CountOverTime | RangeFunc::Rate => 1.0,
            RangeFunc::BytesOverTime | RangeFunc::BytesRate => line_bytes as f64,
        };
        self.add_value(labels, first, last, value, 1)
    }

    /// Adds `value` from `samples` samples to the points `first..=last`.
    pub fn add_value(
        &mut self,
        labels: BTreeMap<String, String>,
        first: usize,
        last: usize,
        value: f64,
        samples: i64,
    ) -> bool {
        let points = self.steps.count + 1;
        let mut new = false;
        let (values, counts) = self.series.entry(labels).or_insert_with(|| {
            new = true;
            (vec![0.0; points], vec![0; points])
        });
        values[first] += value;
        values[last + 1] -= value;
        counts[first] += samples;
        counts[last + 1] -= samples;
        new
    }

    /// The points `first..=last` whose window holds `time`.
    pub fn covering(&self, time: i64) -> Option<(usize, usize)> {
        self.steps.covering(time, self.range)
    }

    /// The series, with a value at each point whose window held a sample.
    pub fn finish(self) -> Vec<Series> {
        let per_second = match self.func {
            RangeFunc::Rate | RangeFunc::BytesRate => Some(self.range as f64 / 1e9),
            _ => None,
        };
        let count = self.steps.count;
        self.series
            .into_iter()
            .map(|(labels, (values, counts))| {
                let (mut value, mut samples) = (0.0, 0);
                let points = (0..count)
                    .map(|i| {
                        value += values[i];
                        samples += counts[i];
                        (samples > 0).then(|| per_second.map_or(value, |secs| value / secs))
                    })
                    .collect();
                Series { labels, points }
            })
            .collect()
    }
}

/// The labels of a group: those named by `by`, or all but those named by `without`.
pub fn group_labels(
    labels: &BTreeMap<String, String>,
    grouping: Option<&Grouping>,
) -> BTreeMap<String, String> {
    match grouping {
        None => BTreeMap::new(),
        Some(Grouping::By(names)) => labels
            .iter()
            .filter(|(k, v)| names.contains(k) && !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(Grouping::Without(names)) => {
            labels.iter().filter(|(k, _)| !names.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
        }
    }
}

/// `sum`, `count`, `avg`, `max`, `min`, `topk`, `bottomk` over series, at each point.
pub fn aggregate(
    op: AggregateOp,
    grouping: Option<&Grouping>,
    param: Option<f64>,
    series: Vec<Series>,
    points: usize,
) -> Vec<Series> {
    if matches!(op, AggregateOp::Topk | AggregateOp::Bottomk) {
        return top(op == AggregateOp::Topk, grouping, param.unwrap_or(0.0), series, points);
    }
    let mut groups: BTreeMap<BTreeMap<String, String>, Vec<(f64, u64)>> = BTreeMap::new();
    for s in series {
        let group =
            groups.entry(group_labels(&s.labels, grouping)).or_insert_with(|| vec![(f64::NAN, 0); points]);
        for (slot, point) in group.iter_mut().zip(&s.points) {
            let Some(v) = *point else { continue };
            slot.0 = match (slot.1, op) {
                (0, AggregateOp::Count) => 1.0,
                (0, _) => v,
                (_, AggregateOp::Sum | AggregateOp::Avg) => slot.0 + v,
                (_, AggregateOp::Count) => slot.0 + 1.0,
                (_, AggregateOp::Max) => slot.0.max(v),
                (_, AggregateOp::Min) => slot.0.min(v),
                (_, AggregateOp::Topk | AggregateOp::Bottomk) => unreachable!("handled above"),
            };
            slot.1 += 1;
        }
    }
    groups
        .into_iter()
        .map(|(labels, slots)| Series {
            labels,
            points: slots
                .into_iter()
                .map(|(v, n)| (n > 0).then(|| if op == AggregateOp::Avg { v / n as f64 } else { v }))
                .collect(),
        })
        .collect()
}

fn top(
    largest: bool,
    grouping: Option<&Grouping>,
    k: f64,
    series: Vec<Series>,
    points: usize,
) -> Vec<Series> {
    let k = if k.is_finite() && k >= 1.0 { k as usize } else { 0 };
    let mut kept: Vec<Series> =
        series.iter().map(|s| Series { labels: s.labels.clone(), points: vec![None; points] }).collect();
    let groups: Vec<BTreeMap<String, String>> =
        series.iter().map(|s| group_labels(&s.labels, grouping)).collect();
    for i in 0..points {
        let mut by_group: BTreeMap<&BTreeMap<String, String>, Vec<(usize, f64)>> = BTreeMap::new();
        for (n, s) in series.iter().enumerate() {
            if let Some(v) = s.points[i] {
                by_group.entry(&groups[n]).or_default().push((n, v));
            }
        }
        for mut members in by_group.into_values() {
            members.sort_by(|a, b| if largest { b.1.total_cmp(&a.1) } else { a.1.total_cmp(&b.1) });
            for (n, v) in members.into_iter().take(k) {
                kept[n].points[i] = Some(v);
            }
        }
    }
    kept.retain(|s| s.points.iter().any(Option::is_some));
    kept
}

/// What a metric expression's evaluation gives: series, or one number at every point.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Series(Vec<Series>),
    Scalar(f64),
}

/// `lhs op rhs`: series with series matched by identical labels, a series and a number
/// point by point, two numbers. A vector's name-less result keeps its labels.
pub fn binary(op: BinaryOp, lhs: Value, rhs: Value) -> Value {
    let apply = |a: f64, b: f64| match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
    };
    match (lhs, rhs) {
        (Value::Scalar(a), Value::Scalar(b)) => Value::Scalar(apply(a, b)),
        (Value::Series(series), Value::Scalar(b)) => Value::Series(
            series
                .into_iter()
                .map(|s| Series {
                    points: s.points.iter().map(|p| p.map(|a| apply(a, b))).collect(),
                    labels: s.labels,
                })
                .collect(),
        ),
        (Value::Scalar(a), Value::Series(series)) => Value::Series(
            series
                .into_iter()
                .map(|s| Series {
                    points: s.points.iter().map(|p| p.map(|b| apply(a, b))).collect(),
                    labels: s.labels,
                })
                .collect(),
        ),
        (Value::Series(left), Value::Series(right)) => {
            let right: HashMap<&BTreeMap<String, String>, &Series> =
                right.iter().map(|s| (&s.labels, s)).collect();
            Value::Series(
                left.iter()
                    .filter_map(|l| {
                        let r = right.get(&l.labels)?;
                        let points = l
                            .points
                            .iter()
                            .zip(&r.points)
                            .map(|(a, b)| Some(apply((*a)?, (*b)?)))
                            .collect::<Vec<_>>();
                        Some(Series { labels: l.labels.clone(), points })
                    })
                    .filter(|s| s.points.iter().any(Option::is_some))
                    .collect(),
            )
        }
    }
}

/// A series' labels as plain pairs (every category), for a metric query's series.
pub fn plain(labels: &Labels) -> BTreeMap<String, String> {
    labels.iter().map(|(k, l)| (k.clone(), l.value.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::logql::{self, Metric, Query};

    fn entry(line: &str, labels: &[(&str, &str, Origin)]) -> Entry {
        Entry {
            time: 1_700_000_000_000_000_000,
            line: line.into(),
            labels: labels
                .iter()
                .map(|(k, v, o)| ((*k).into(), Label { value: (*v).into(), origin: *o }))
                .collect(),
        }
    }

    fn pipeline(query: &str) -> Pipeline {
        let Ok(Query::Log(log)) = logql::parse(query) else { panic!("{query}") };
        Pipeline::new(&log.stages).unwrap()
    }

    fn value<'a>(e: &'a Entry, name: &str) -> Option<&'a str> {
        e.labels.get(name).map(|l| l.value.as_str())
    }

    #[test]
    fn line_filters_keep_and_drop_as_loki_does() {
        let e = || entry("GET /api/users 200 12ms", &[]);
        assert!(pipeline(r#"{a="b"} |= "users""#).run(e()).is_some());
        assert!(pipeline(r#"{a="b"} |= "Users""#).run(e()).is_none(), "case-sensitive");
        assert!(pipeline(r#"{a="b"} |= "nope" or "users""#).run(e()).is_some());
        assert!(pipeline(r#"{a="b"} != "nope" or "users""#).run(e()).is_none(), "!= with or: neither");
        assert!(pipeline(r#"{a="b"} |~ "(?i)get .* 2\\d\\d""#).run(e()).is_some());
        assert!(pipeline(r#"{a="b"} |~ "^users""#).run(e()).is_none(), "line regexes are not anchored, ^ is");
        assert!(pipeline(r#"{a="b"} !~ "5\\d\\d""#).run(e()).is_some());
    }

    #[test]
    fn json_and_logfmt_extract_fields_with_loki_names() {
        let stream = [("service_name", "api", Origin::Stream), ("level", "info", Origin::Metadata)];
        let out = pipeline(r#"{a="b"} | json"#)
            .run(entry(
                r#"{"level":"warn","http":{"status":503,"path":"/x"},"tags":[1],"ok":true,"n":null}"#,
                &stream,
            ))
            .unwrap();
        assert_eq!(value(&out, "level"), Some("info"), "a stream or metadata label is kept");
        assert_eq!(value(&out, "level_extracted"), Some("warn"));
        assert_eq!(value(&out, "http_status"), Some("503"));
        assert_eq!(value(&out, "http_path"), Some("/x"));
        assert_eq!(value(&out, "ok"), Some("true"));
        assert_eq!(value(&out, "n"), Some(""));
        assert_eq!(value(&out, "tags"), None, "arrays are left out");
        let named = pipeline(r#"{a="b"} | json code="http.status", first="tags[0]", obj="http""#)
            .run(entry(r#"{"http":{"status":503},"tags":["a","b"]}"#, &[]))
            .unwrap();
        assert_eq!(value(&named, "code"), Some("503"));
        assert_eq!(value(&named, "first"), Some("a"));
        assert_eq!(value(&named, "obj"), Some(r#"{"status":503}"#));
        let bad = pipeline(r#"{a="b"} | json"#).run(entry("not json", &[])).unwrap();
        assert_eq!(value(&bad, ERROR), Some("JSONParserErr"));
        let dropped = pipeline(r#"{a="b"} | json | __error__="""#).run(entry("not json", &[]));
        assert!(dropped.is_none(), "records that failed to parse can be filtered out");

        let out = pipeline(r#"{a="b"} | logfmt"#)
            .run(entry(r#"level=error msg="disk \"full\"" took=1.5s flag"#, &[]))
            .unwrap();
        assert_eq!(value(&out, "msg"), Some(r#"disk "full""#));
        assert_eq!(value(&out, "took"), Some("1.5s"));
        assert_eq!(value(&out, "flag"), Some(""));
        let bad = pipeline(r#"{a="b"} | logfmt"#).run(entry(r#"a="unterminated"#, &[])).unwrap();
        assert_eq!(value(&bad, ERROR), Some("LogfmtParserErr"));
    }

    #[test]
    fn label_filters_compare_text_numbers_durations_and_sizes() {
        let e = || entry(r#"status=503 took=1500ms size=2KB method=GET"#, &[]);
        let keeps = |q: &str| pipeline(&format!(r#"{{a="b"}} | logfmt | {q}"#)).run(e()).is_some();
        assert!(keeps("status >= 500"));
        assert!(!keeps("status < 500"));
        assert!(keeps("took > 1s and took <= 1.5s"));
        assert!(keeps("size == 2000"));
        assert!(keeps(r#"method="POST" or status=503"#));
        assert!(!keeps(r#"method=~"P.*""#));
        assert!(keeps(r#"missing="""#), "a missing label is empty");
        assert!(!keeps("missing > 1"), "a line without the label is dropped");
        let out = pipeline(r#"{a="b"} | logfmt | method > 2"#).run(e()).unwrap();
        assert_eq!(value(&out, ERROR), Some("LabelFilterErr"), "kept, marked, as Loki does");
    }

    #[test]
    fn formats_drop_and_the_trace_to_logs_template() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let query = format!(
            "{{service_name=\"api\"}} | label_format log_line_contains_trace_id=`{{{{ contains \"{trace}\" __line__  }}}}` \
             | log_line_contains_trace_id=\"true\" OR trace_id=\"{trace}\""
        );
        let p = pipeline(&query);
        let meta = [("trace_id", trace, Origin::Metadata)];
        assert!(p.run(entry("no id in the line", &meta)).is_some(), "by the record's trace id");
        assert!(p.run(entry(&format!("handled trace {trace}"), &[])).is_some(), "by the line");
        assert!(p.run(entry("other", &[("trace_id", "00", Origin::Metadata)])).is_none());

        let out =
            pipeline(r#"{a="b"} | logfmt | line_format "{{.method | ToLower}} {{ .status }}: {{__line__}}""#)
                .run(entry("method=GET status=200", &[]))
                .unwrap();
        assert_eq!(out.line, "get 200: method=GET status=200");
        let out = pipeline(
            r#"{a="b"} | logfmt | label_format code=status, up=`{{ upper .method }}` | drop method"#,
        )
        .run(entry("method=get status=200", &[]))
        .unwrap();
        assert_eq!((value(&out, "code"), value(&out, "status")), (Some("200"), None), "renamed");
        assert_eq!((value(&out, "up"), value(&out, "method")), (Some("GET"), None));
        let out = pipeline(r#"{a="b"} | logfmt | drop status="500""#).run(entry("status=200", &[])).unwrap();
        assert_eq!(value(&out, "status"), Some("200"), "dropped only when it matches");
        for refused in [r#"{{ if .a }}x{{ end }}"#, r#"{{ $x := 1 }}"#, r#"{{ printf "%d" .a }}"#, "{{ .a"] {
            let Ok(Query::Log(log)) = logql::parse(&format!("{{a=\"b\"}} | line_format `{refused}`")) else {
                panic!("{refused}")
            };
            assert!(Pipeline::new(&log.stages).is_err(), "{refused}");
        }
    }

    #[test]
    fn windows_count_each_sample_in_every_window_that_holds_it() {
        let s = 1_000_000_000;
        // Points at 0, 10 s, 20 s, 30 s; windows of 20 s: (t - 20 s, t].
        let steps = Steps::new(0, 30 * s, 10 * s).unwrap();
        let mut w = Windows::new(RangeFunc::CountOverTime, 20 * s, steps);
        let labels = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
        for t in [0, 5 * s, 10 * s, 25 * s] {
            w.add(labels.clone(), t, 3);
        }
        assert_eq!(w.finish()[0].points, [Some(1.0), Some(3.0), Some(2.0), Some(1.0)]);
        let mut w = Windows::new(RangeFunc::BytesRate, 20 * s, steps);
        w.add(labels.clone(), 31 * s, 4);
        w.add(labels, 12 * s, 4);
        assert_eq!(w.finish()[0].points, [None, None, Some(0.2), Some(0.2)], "31 s is past the last point");
        assert!(Steps::new(0, 20_000 * s, s).unwrap_err().contains("11000"));
        assert!(Steps::new(i64::MIN, i64::MAX, 1).is_err(), "no overflow");
        let far = Steps::new(0, 1 << 62, 1 << 61).unwrap();
        assert_eq!(far.covering(i64::MAX, i64::MAX), None, "past the last point, without wrapping");
        assert_eq!(far.covering(1, i64::MAX), Some((1, 2)));
    }

    #[test]
    fn aggregations_and_arithmetic() {
        let series = |labels: &[(&str, &str)], points: &[Option<f64>]| Series {
            labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            points: points.to_vec(),
        };
        let input = vec![
            series(&[("svc", "a"), ("lvl", "info")], &[Some(1.0), Some(2.0)]),
            series(&[("svc", "a"), ("lvl", "error")], &[Some(3.0), None]),
            series(&[("svc", "b"), ("lvl", "info")], &[Some(5.0), Some(1.0)]),
        ];
        let by = Grouping::By(vec!["svc".into()]);
        let sum = aggregate(AggregateOp::Sum, Some(&by), None, input.clone(), 2);
        assert_eq!(
            sum,
            [
                series(&[("svc", "a")], &[Some(4.0), Some(2.0)]),
                series(&[("svc", "b")], &[Some(5.0), Some(1.0)])
            ]
        );
        let avg = aggregate(AggregateOp::Avg, None, None, input.clone(), 2);
        assert_eq!(avg, [series(&[], &[Some(3.0), Some(1.5)])]);
        let count = aggregate(
            AggregateOp::Count,
            Some(&Grouping::Without(vec!["svc".into()])),
            None,
            input.clone(),
            2,
        );
        assert_eq!(count[0], series(&[("lvl", "error")], &[Some(1.0), None]));
        let top = aggregate(AggregateOp::Topk, None, Some(1.0), input.clone(), 2);
        assert_eq!(top.len(), 2, "the largest at each point: b, then a/info");
        let Value::Series(doubled) = binary(BinaryOp::Mul, Value::Series(sum), Value::Scalar(2.0)) else {
            panic!()
        };
        assert_eq!(doubled[0].points, [Some(8.0), Some(4.0)]);
        let Ok(Query::Metric(Metric::Binary { .. })) = logql::parse("vector(1)+vector(1)") else { panic!() };
        let one = Value::Series(vec![series(&[], &[Some(1.0)])]);
        assert_eq!(binary(BinaryOp::Add, one.clone(), one), Value::Series(vec![series(&[], &[Some(2.0)])]));
    }
}
