//! A typed walk over a parsed TOML document that keeps every span.
//!
//! Service files are read with `toml_edit` (the parser underneath `toml`), which
//! keeps the byte span of every key and value, instead of deserializing into serde
//! structs: serde stops at the first problem and forgets where a value came from,
//! while a person fixing a file wants every problem at once, each with
//! file:line:column and the dotted key, including the ones only found after parsing.
//! [`Section`] asks for the keys it knows (remembering them, so that whatever is left
//! is an unknown key with a "did you mean" from the same list) and [`Field`] converts
//! one value, recording an error and returning `None` when it cannot.

use std::cell::RefCell;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use super::expand::{expand, EnvLookup};
use super::ConfigError;
use crate::names::closest;
use crate::units;

/// One file being read: its text for line/column, the errors found so far, and the
/// environment used for expansion.
pub(crate) struct Ctx<'t> {
    file: PathBuf,
    text: &'t str,
    line_starts: Vec<usize>,
    errors: RefCell<Vec<ConfigError>>,
    env: EnvLookup<'t>,
}

impl<'t> Ctx<'t> {
    pub fn new(file: &Path, text: &'t str, env: EnvLookup<'t>) -> Ctx<'t> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Ctx {
            file: file.to_path_buf(),
            text,
            line_starts,
            errors: RefCell::new(Vec::new()),
            env,
        }
    }

    /// 1-based line and column (in characters) of a byte offset; `(1, 1)` without one.
    pub fn line_col(&self, offset: Option<usize>) -> (usize, usize) {
        let Some(offset) = offset else {
            return (1, 1);
        };
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(1, |s| s.chars().count() + 1);
        (line, column)
    }

    pub fn error(
        &self,
        span: Option<Range<usize>>,
        key: &str,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let (line, column) = self.line_col(span.map(|r| r.start));
        self.errors.borrow_mut().push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
            help,
        });
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.borrow().is_empty()
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors.into_inner()
    }

    pub fn expand(&self, s: &str) -> Result<String, String> {
        expand(s, self.env)
    }

    /// Records a syntax error from the TOML parser, naming the key on that line when
    /// the line is a plain `key = …` so even these errors say which setting broke.
    pub fn syntax_error(&self, e: &toml_edit::TomlError) {
        let span = e.span();
        let (line, _) = self.line_col(span.as_ref().map(|r| r.start));
        let message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let key = key_on_line(self.text, line);
        self.error(span, &key, format!("invalid TOML: {message}"), None);
    }
}

/// The dotted key being assigned at 1-based `line`: the `key = …` on that line or,
/// for a value left open across lines, the nearest one above it, prefixed by the
/// table header it sits under.
fn key_on_line(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut assignment = None;
    for l in lines.iter().take(line).rev() {
        if l.starts_with('[') {
            break;
        }
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some((k, _)) = l.split_once('=') {
            let k = k.trim();
            let bare = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-. ".contains(c));
            if bare {
                assignment = Some(k.split('.').map(str::trim).collect::<Vec<_>>().join("."));
                break;
            }
        }
    }
    let Some(key) = assignment else {
        return String::new();
    };
    let table = lines
        .iter()
        .take(line)
        .rev()
        .find(|l| l.starts_with('['))
        .map(|l| {
            l.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    if table.is_empty() {
        key
    } else {
        format!("{table}.{key}")
    }
}

/// A table (header, inline or dotted) whose keys are being read.
pub(crate) struct Section<'a> {
    ctx: &'a Ctx<'a>,
    table: &'a dyn TableLike,
    path: String,
    span: Option<Range<usize>>,
    known: RefCell<Vec<&'static str>>,
}

impl<'a> Section<'a> {
    pub fn root(ctx: &'a Ctx<'a>, table: &'a dyn TableLike) -> Section<'a> {
        Section {
            ctx,
            table,
            path: String::new(),
            span: None,
            known: RefCell::new(Vec::new()),
        }
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`, if present. Every key asked for counts as known.
    pub fn get(&self, key: &'static str) -> Option<Field<'a>> {
        self.known.borrow_mut().push(key);
        let (k, item) = self.table.get_key_value(key)?;
        Some(Field {
            ctx: self.ctx,
            key: self.child_path(key),
            item,
            key_span: k.span(),
        })
    }

    /// Every entry, for tables whose keys are free-form (`env`).
    pub fn entries(&self) -> Vec<(String, Field<'a>)> {
        let table = self.table;
        table
            .iter()
            .filter_map(|(name, _)| {
                let (k, item) = table.get_key_value(name)?;
                Some((
                    name.to_string(),
                    Field {
                        ctx: self.ctx,
                        key: self.child_path(name),
                        item,
                        key_span: k.span(),
                    },
                ))
            })
            .collect()
    }

    /// An error about the section as a whole (a required key is missing).
    pub fn error(&self, key: &str, message: impl Into<String>, help: Option<String>) {
        self.ctx
            .error(self.span.clone(), &self.child_path(key), message, help);
    }

    /// Reports every key that was never asked for, with the closest known key as a
    /// hint; `elsewhere` may say where a misplaced key belongs (`grace` → `stop.grace`).
    pub fn finish(&self, elsewhere: &dyn Fn(&str) -> Option<String>) {
        let known = self.known.borrow();
        for (name, _) in self.table.iter() {
            if known.contains(&name) {
                continue;
            }
            let span = self.table.key(name).and_then(|k| k.span());
            let help = elsewhere(name)
                .or_else(|| {
                    closest(name, known.iter().copied()).map(|k| format!("did you mean `{k}`?"))
                })
                .or_else(|| {
                    let mut list: Vec<&str> = known.clone();
                    list.sort_unstable();
                    list.dedup();
                    Some(format!(
                        "known keys here: {}",
                        list.iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                });
            self.ctx
                .error(span, &self.child_path(name), "unknown key", help);
        }
    }
}

/// A string from an array, with where it was written.
pub(crate) struct Elem {
    pub value: String,
    pub span: Option<Range<usize>>,
    pub key: String,
}

/// One key's value being converted.
pub(crate) struct Field<'a> {
    ctx: &'a Ctx<'a>,
    pub key: String,
    item: &'a Item,
    key_span: Option<Range<usize>>,
}

fn type_name(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => value_type_name(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

fn value_type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

impl<'a> Field<'a> {
    pub fn span(&self) -> Option<Range<usize>> {
        self.item.span().or_else(|| self.key_span.clone())
    }

    pub fn error(&self, message: impl Into<String>) {
        self.ctx.error(self.span(), &self.key, message, None);
    }

    /// An error about part of this value (an array element).
    pub fn error_at(&self, span: Option<Range<usize>>, key: &str, message: impl Into<String>) {
        self.ctx.error(span, key, message, None);
    }

    /// 1-based line and column of a span inside this file.
    pub fn line_col(&self, span: Option<Range<usize>>) -> (usize, usize) {
        self.ctx.line_col(span.map(|r| r.start))
    }

    /// What kind of value this is, for messages (`an integer`, `a table`).
    pub fn kind(&self) -> &'static str {
        type_name(self.item)
    }

    pub fn error_help(&self, message: impl Into<String>, help: impl Into<String>) {
        self.ctx
            .error(self.span(), &self.key, message, Some(help.into()));
    }

    fn wrong_type(&self, expected: &str, example: &str) {
        self.error_help(
            format!("expected {expected}, found {}", type_name(self.item)),
            format!(
                "e.g. {} = {example}",
                self.key.rsplit('.').next().unwrap_or("")
            ),
        );
    }

    pub fn str(&self, example: &str) -> Option<&'a str> {
        match self.item.as_str() {
            Some(s) => Some(s),
            None => {
                self.wrong_type("a string", example);
                None
            }
        }
    }

    /// A string from a fixed set of choices.
    pub fn choice<T: Copy>(&self, choices: &[(&str, T)]) -> Option<T> {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let example = format!("\"{}\"", names.first().copied().unwrap_or(""));
        let s = self.str(&example)?;
        if let Some((_, v)) = choices.iter().find(|(n, _)| *n == s) {
            return Some(*v);
        }
        let list = names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let help = match closest(s, names.iter().copied()) {
            Some(c) => format!("did you mean \"{c}\"?"),
            None => format!("one of {list}"),
        };
        self.error_help(format!("`{s}` is not one of {list}"), help);
        None
    }

    /// A string after `~` / `${VAR}` expansion.
    pub fn expanded_str(&self, example: &str) -> Option<String> {
        let s = self.str(example)?;
        self.expand_at(s, self.span(), &self.key)
    }

    pub fn expand_at(&self, s: &str, span: Option<Range<usize>>, key: &str) -> Option<String> {
        match self.ctx.expand(s) {
            Ok(v) => Some(v),
            Err(e) => {
                self.ctx.error(span, key, e, None);
                None
            }
        }
    }

    pub fn bool(&self) -> Option<bool> {
        match self.item.as_bool() {
            Some(b) => Some(b),
            None => {
                self.wrong_type("true or false", "true");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn int(&self, min: i64, max: i64, example: &str) -> Option<i64> {
        let Some(n) = self.item.as_integer() else {
            self.wrong_type("an integer", example);
            return None;
        };
        if n < min || n > max {
            let range = if max == i64::MAX {
                format!("at least {min}")
            } else {
                format!("between {min} and {max}")
            };
            self.error_help(
                format!("{n} is out of range: must be {range}"),
                format!("e.g. {} = {example}", self.leaf()),
            );
            return None;
        }
        Some(n)
    }

    pub fn u32(&self, min: u32, max: u32, example: &str) -> Option<u32> {
        self.int(i64::from(min), i64::from(max), example)
            .and_then(|n| u32::try_from(n).ok())
    }

    pub fn u64(&self, min: u64, example: &str) -> Option<u64> {
        let min = i64::try_from(min).unwrap_or(i64::MAX);
        self.int(min, i64::MAX, example)
            .and_then(|n| u64::try_from(n).ok())
    }

    /// A finite number in `min..=max`; integers are accepted (`factor = 2`).
    pub fn float(&self, min: f64, max: f64, example: &str) -> Option<f64> {
        let v = match self.item.as_value() {
            Some(Value::Float(f)) => *f.value(),
            Some(Value::Integer(i)) => *i.value() as f64,
            _ => {
                self.wrong_type("a number", example);
                return None;
            }
        };
        if !v.is_finite() || v < min || v > max {
            let range = if max == f64::MAX {
                format!("at least {min}")
            } else {
                format!("between {min} and {max}")
            };
            self.error_help(
                format!("{v} is out of range: must be {range}"),
                format!("e.g. {} = {example}", self.leaf()),
            );
            return None;
        }
        Some(v)
    }

    fn leaf(&self) -> &str {
        self.key.rsplit('.').next().unwrap_or("")
    }

    /// A duration string; `positive` rejects `0s` for settings where zero cannot work.
    pub fn duration(&self, positive: bool, example: &str) -> Option<Duration> {
        if self.item.as_integer().is_some() || self.item.as_float().is_some() {
            self.error_help(
                "a duration needs a unit and quotes",
                format!("e.g. {} = {example}", self.leaf()),
            );
            return None;
        }
        let s = self.str(example)?;
        match units::parse_duration(s) {
            Ok(d) if positive && d.is_zero() => {
                self.error_help(
                    "must be longer than zero",
                    format!("e.g. {} = {example}", self.leaf()),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(e);
                None
            }
        }
    }

    /// A size: an integer number of bytes or a string with a unit.
    pub fn size(&self, min: u64, example: &str) -> Option<u64> {
        let n = if let Some(n) = self.item.as_integer() {
            match u64::try_from(n) {
                Ok(n) => n,
                Err(_) => {
                    self.error_help(
                        format!("{n} is negative"),
                        format!("e.g. {} = {example}", self.leaf()),
                    );
                    return None;
                }
            }
        } else {
            let s = self.str(example)?;
            match units::parse_size(s) {
                Ok(n) => n,
                Err(e) => {
                    self.error(e);
                    return None;
                }
            }
        };
        if n < min {
            self.error_help(
                format!("must be at least {}", units::format_size(min)),
                format!("e.g. {} = {example}", self.leaf()),
            );
            return None;
        }
        Some(n)
    }

    /// An array of strings, each with its span; `non_empty` rejects `[]` and `""`.
    pub fn str_array(&self, non_empty: bool, example: &str) -> Option<Vec<Elem>> {
        let Some(array) = self.item.as_array() else {
            self.wrong_type("an array of strings", example);
            return None;
        };
        if non_empty && array.is_empty() {
            self.error_help(
                "must not be empty",
                format!("e.g. {} = {example}", self.leaf()),
            );
            return None;
        }
        let mut out = Vec::with_capacity(array.len());
        let mut ok = true;
        for (i, v) in array.iter().enumerate() {
            let key = format!("{}[{i}]", self.key);
            match v.as_str() {
                Some(s) if s.contains('\0') => {
                    self.ctx
                        .error(v.span(), &key, "contains a NUL character", None);
                    ok = false;
                }
                Some(s) => out.push(Elem {
                    value: s.to_string(),
                    span: v.span(),
                    key,
                }),
                None => {
                    self.ctx.error(
                        v.span(),
                        &key,
                        format!("expected a string, found {}", value_type_name(v)),
                        Some(format!("e.g. {} = {example}", self.leaf())),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// An array of strings with each element expanded.
    pub fn expanded_array(&self, non_empty: bool, example: &str) -> Option<Vec<String>> {
        let elems = self.str_array(non_empty, example)?;
        let mut out = Vec::with_capacity(elems.len());
        let mut ok = true;
        for e in &elems {
            match self.expand_at(&e.value, e.span.clone(), &e.key) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        // Checked after expansion too: `${EMPTY}` as the program is no program.
        if ok && non_empty && out.first().is_some_and(|p| p.is_empty()) {
            self.error_help(
                "the program name must not be empty",
                format!("e.g. {} = {example}", self.leaf()),
            );
            return None;
        }
        ok.then_some(out)
    }

    /// The value as a table to read keys from.
    pub fn section(&self) -> Option<Section<'a>> {
        match self.item.as_table_like() {
            Some(table) => Some(Section {
                ctx: self.ctx,
                table,
                path: self.key.clone(),
                span: self.span(),
                known: RefCell::new(Vec::new()),
            }),
            None => {
                self.wrong_type("a table", "{ ... }");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_in_characters() {
        let env = |_: &str| None;
        let text = "a = 1\nbé = \"x\"\n\nc";
        let ctx = Ctx::new(Path::new("f.toml"), text, &env);
        assert_eq!(ctx.line_col(Some(0)), (1, 1));
        assert_eq!(ctx.line_col(Some(4)), (1, 5));
        assert_eq!(ctx.line_col(Some(6)), (2, 1));
        // `é` is two bytes but one column.
        assert_eq!(ctx.line_col(Some(10)), (2, 4));
        assert_eq!(ctx.line_col(Some(17)), (4, 1));
        assert_eq!(ctx.line_col(Some(999)), (4, 2));
        assert_eq!(ctx.line_col(None), (1, 1));
    }

    #[test]
    fn syntax_errors_name_the_key_on_their_line() {
        assert_eq!(
            key_on_line("a = 1\n[restart]\npolicy = \n", 3),
            "restart.policy"
        );
        assert_eq!(key_on_line("[stop]\n signal . x = 1", 2), "stop.signal.x");
        assert_eq!(key_on_line("\"quoted\" = 1", 1), "");
        assert_eq!(key_on_line("garbage", 1), "");
        assert_eq!(key_on_line("a = [\n  1,\n\n  x", 4), "a");
        assert_eq!(key_on_line("a = 1\n[t]\n", 2), "");
    }
}
