//! Reading a policy file as written: a spanned TOML tree and a reader that takes typed
//! values key by key, recording every problem (with line and column) instead of stopping at
//! the first, and reporting keys nobody asked for as unknown.

use std::fmt;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One thing wrong with a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `level[2].min_adj`; empty for the file as a whole.
    pub key: String,
    pub message: String,
}

impl Problem {
    /// As a warning: `FILE:LINE:COLUMN: warning: KEY: message`.
    pub fn as_warning(&self) -> String {
        let mut s = format!(
            "{}:{}:{}: warning: ",
            self.file.display(),
            self.line,
            self.column
        );
        if !self.key.is_empty() {
            s.push_str(&self.key);
            s.push_str(": ");
        }
        s.push_str(&self.message);
        s
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// The document being read and the problems found so far.
pub struct Doc<'a> {
    pub file: &'a Path,
    text: &'a str,
    pub problems: Vec<Problem>,
    /// What is valid but probably not meant (a protection anyone can take): said by
    /// `lowmemd check`, never a reason to refuse the file.
    pub warnings: Vec<Problem>,
}

impl<'a> Doc<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Doc {
            file,
            text,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    pub fn problem(&mut self, span: &Range<usize>, key: &str, message: impl Into<String>) {
        let p = self.at(span, key, message.into());
        self.problems.push(p);
    }

    pub fn warning(&mut self, span: &Range<usize>, key: &str, message: impl Into<String>) {
        let w = self.at(span, key, message.into());
        self.warnings.push(w);
    }

    fn at(&self, span: &Range<usize>, key: &str, message: String) -> Problem {
        let (line, column) = self.line_col(span.start);
        Problem {
            file: self.file.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message,
        }
    }

    /// Parses the text; syntax errors are recorded (all of them) and yield `None`.
    pub fn parse(&mut self) -> Option<Spanned<DeTable<'a>>> {
        let (table, errors) = DeTable::parse_recoverable(self.text);
        if errors.is_empty() {
            return Some(table);
        }
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            let msg = format!("TOML syntax: {}", e.message().trim());
            self.problem(&span, "", msg);
        }
        None
    }
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Reads one table's keys. Every key taken is remembered; [`Table::finish`] reports the rest.
pub struct Table<'t, 'i> {
    entries: Vec<(
        &'t Spanned<toml::de::DeString<'i>>,
        &'t Spanned<DeValue<'i>>,
    )>,
    /// This table's key path (`""` for the root).
    pub path: String,
    pub span: Range<usize>,
    taken: Vec<&'static str>,
}

impl<'t, 'i> Table<'t, 'i> {
    pub fn new(table: &'t DeTable<'i>, path: String, span: Range<usize>) -> Self {
        Table {
            entries: table.iter().collect(),
            path,
            span,
            taken: Vec::new(),
        }
    }

    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.taken.push(key);
        self.entries
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| *v)
    }

    /// Where `key` is written, if it is.
    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.entries
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(k, _)| k.span())
    }

    pub fn has(&self, key: &str) -> bool {
        self.entries
            .iter()
            .any(|(k, _)| k.get_ref().as_ref() == key)
    }

    fn wrong_type(&self, doc: &mut Doc<'_>, key: &str, v: &Spanned<DeValue<'_>>, want: &str) {
        let msg = format!("expected {want}, found {}", type_name(v.get_ref()));
        doc.problem(&v.span(), &self.key_path(key), msg);
    }

    pub fn string(
        &mut self,
        doc: &mut Doc<'_>,
        key: &'static str,
    ) -> Option<(String, Range<usize>)> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some((s.to_string(), v.span())),
            _ => {
                self.wrong_type(doc, key, v, "a string");
                None
            }
        }
    }

    /// A string, or an array of strings (for "any of these").
    pub fn strings(
        &mut self,
        doc: &mut Doc<'_>,
        key: &'static str,
    ) -> Option<Vec<(String, Range<usize>)>> {
        let v = self.get(key)?;
        let want = "a string or an array of strings";
        match v.get_ref() {
            DeValue::String(s) => Some(vec![(s.to_string(), v.span())]),
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match item.get_ref() {
                        DeValue::String(s) => out.push((s.to_string(), item.span())),
                        other => {
                            let msg = format!(
                                "expected {want}, found an array holding {}",
                                type_name(other)
                            );
                            doc.problem(&item.span(), &self.key_path(key), msg);
                            return None;
                        }
                    }
                }
                if out.is_empty() {
                    doc.problem(
                        &v.span(),
                        &self.key_path(key),
                        "an empty list matches nothing",
                    );
                    return None;
                }
                Some(out)
            }
            _ => {
                self.wrong_type(doc, key, v, want);
                None
            }
        }
    }

    pub fn boolean(&mut self, doc: &mut Doc<'_>, key: &'static str) -> Option<bool> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(doc, key, v, "true or false");
                None
            }
        }
    }

    /// An integer in `range`; `unit` is named in the message.
    pub fn int(
        &mut self,
        doc: &mut Doc<'_>,
        key: &'static str,
        range: RangeInclusive<i64>,
        unit: &str,
    ) -> Option<i64> {
        let v = self.get(key)?;
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => {
                self.wrong_type(doc, key, v, &format!("an integer ({unit})"));
                return None;
            }
        };
        self.in_range(doc, key, v, n, range, unit)
    }

    /// A number (integer or float) in `range`.
    pub fn number(
        &mut self,
        doc: &mut Doc<'_>,
        key: &'static str,
        range: RangeInclusive<f64>,
        unit: &str,
    ) -> Option<f64> {
        let v = self.get(key)?;
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            _ => {
                self.wrong_type(doc, key, v, &format!("a number ({unit})"));
                return None;
            }
        };
        self.in_range(doc, key, v, n, range, unit)
    }

    /// `n` if it parsed and lies in `range`; otherwise a problem that names the valid range.
    fn in_range<T: PartialOrd + std::fmt::Display>(
        &self,
        doc: &mut Doc<'_>,
        key: &str,
        v: &Spanned<DeValue<'_>>,
        n: Option<T>,
        range: RangeInclusive<T>,
        unit: &str,
    ) -> Option<T> {
        match n {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                let msg = format!(
                    "{} is out of range: use {}..={} ({unit})",
                    v.get_ref().value_text(),
                    range.start(),
                    range.end()
                );
                doc.problem(&v.span(), &self.key_path(key), msg);
                None
            }
        }
    }

    /// A sub-table.
    pub fn table(&mut self, doc: &mut Doc<'_>, key: &'static str) -> Option<Table<'t, 'i>> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Table(t) => Some(Table::new(t, self.key_path(key), v.span())),
            _ => {
                self.wrong_type(doc, key, v, "a table");
                None
            }
        }
    }

    /// An array of tables (`[[key]]`), each with its path `key[N]` (1-based).
    pub fn tables(&mut self, doc: &mut Doc<'_>, key: &'static str) -> Vec<Table<'t, 'i>> {
        let Some(v) = self.get(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(doc, key, v, &format!("an array of tables ([[{key}]])"));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{}]", self.key_path(key), i + 1);
            match item.get_ref() {
                DeValue::Table(t) => out.push(Table::new(t, path, item.span())),
                other => {
                    let msg = format!("expected a table, found {}", type_name(other));
                    doc.problem(&item.span(), &path, msg);
                }
            }
        }
        out
    }

    /// Reports every key that was not taken, suggesting the closest known one.
    pub fn finish(self, doc: &mut Doc<'_>) {
        for (k, _) in &self.entries {
            let name = k.get_ref().as_ref();
            if self.taken.contains(&name) {
                continue;
            }
            let hint = closest(name, &self.taken)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            let msg = format!(
                "unknown key{hint}; known keys here: {}",
                self.taken.join(", ")
            );
            doc.problem(&k.span(), &self.key_path(name), msg);
        }
    }
}

trait ValueText {
    fn value_text(&self) -> String;
}

impl ValueText for DeValue<'_> {
    fn value_text(&self) -> String {
        match self {
            DeValue::Integer(i) => i.to_string(),
            DeValue::Float(f) => f.to_string(),
            other => type_name(other).to_string(),
        }
    }
}

/// The known key nearest to a misspelt one (edit distance ≤ 2, or one contains the other).
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2 || k.contains(name) || name.contains(k))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let doc = Doc::new(Path::new("x"), "a = 1\nbb = 2\n");
        assert_eq!(doc.line_col(0), (1, 1));
        assert_eq!(doc.line_col(6), (2, 1));
        assert_eq!(doc.line_col(11), (2, 6));
    }

    #[test]
    fn misspellings_get_a_suggestion() {
        assert_eq!(closest("min_ajd", &["min_adj", "wait_ms"]), Some("min_adj"));
        assert_eq!(closest("zzz", &["min_adj"]), None);
    }
}
