//! Asterisk's configuration file syntax, as `main/config.c` reads it.
//!
//! - `[name]` starts a section; `[name](!)` is a template, `[name](a,b)` copies the variables
//!   of the templates `a` and `b` (in that order) before its own, `[name](!,a)` both, and
//!   `[name](+)` appends to the section of that name defined earlier.
//! - `key = value` and `key => value` are the same to readers; keys compare case-insensitively
//!   (Asterisk's `ast_variable_retrieve` uses `strcasecmp`), so they are lower-cased here.
//! - `;` starts a comment unless written `\;`; `;--` opens a block comment that `--;` closes,
//!   possibly lines later.
//! - `#include FILE` and `#tryinclude FILE` (the name bare, in `"…"` or in `<…>`) insert the
//!   file's lines in place, so an included file continues the current section. Names may be
//!   globs. A missing `#include` is a note (Asterisk refuses to load the module in that case);
//!   a missing `#tryinclude` is silent. `#exec` runs a program in Asterisk; it is never run
//!   here, only noted.
//!
//! Every variable keeps the file and line it came from, so discovery can say where each port
//! and trunk was found. The parser is pure: files come from a [`Files`] implementation.

use std::fmt;

use serde::Serialize;

/// Where something was written: a file (as named relative to the configuration directory) and
/// a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Origin {
    /// File name relative to the configuration directory.
    pub file: String,
    /// 1-based line number.
    pub line: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    /// The key, lower-cased.
    pub key: String,
    /// The value, trimmed, with `\;` unescaped.
    pub value: String,
    /// Where the line is (for an inherited variable: where the template wrote it).
    pub origin: Origin,
}

/// One `[section]` with its variables in order, inherited ones first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name between the brackets.
    pub name: String,
    /// Whether it is a template (`(!)`): templates are not objects of their own.
    pub template: bool,
    /// Variables, inherited first, in file order.
    pub vars: Vec<Var>,
    /// Where the header is.
    pub origin: Origin,
}

impl Section {
    /// The last value of `key` (later lines override earlier ones, as in Asterisk's sorcery).
    pub fn get(&self, key: &str) -> Option<&Var> {
        self.vars.iter().rev().find(|v| v.key == key)
    }

    /// Every value of `key`, in order (for keys that may repeat: `match`, `permit`, `bind`).
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Var> + 'a {
        self.vars.iter().filter(move |v| v.key == key)
    }
}

/// Something about the files worth telling the administrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    /// Where, when it is about a line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// What.
    pub message: String,
}

/// A parsed configuration file with its includes expanded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Sections in order. Variables before the first section are dropped (Asterisk does the
    /// same, with an error) and noted.
    pub sections: Vec<Section>,
    /// Problems found on the way.
    pub notes: Vec<Note>,
    /// Files read, in order (the main file first).
    pub files: Vec<String>,
}

impl Config {
    /// Sections that are objects (not templates) with this name, case-insensitively.
    pub fn sections_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Section> + 'a {
        self.sections
            .iter()
            .filter(move |s| !s.template && s.name.eq_ignore_ascii_case(name))
    }

    /// The object sections.
    pub fn objects(&self) -> impl Iterator<Item = &Section> {
        self.sections.iter().filter(|s| !s.template)
    }
}

/// Where configuration files come from.
pub trait Files {
    /// The files matching `pattern` (a name relative to the configuration directory, possibly
    /// an absolute path or a glob), each as (name, text), sorted by name. Empty when none.
    fn read(&self, pattern: &str) -> Vec<(String, String)>;

    /// Whether `pattern` names something outside the configuration directory, which is never
    /// read: the files are writable by the PBX's user, and an `#include "/etc/shadow"` must
    /// not print another file's content into a policy's notes.
    fn outside(&self, pattern: &str) -> bool {
        let _ = pattern;
        false
    }
}

/// Includes deeper than this are refused (Asterisk has no limit, but loops must end).
const MAX_DEPTH: usize = 16;
/// At most this many files per configuration.
const MAX_FILES: usize = 512;
/// Longest text of one file.
const MAX_FILE_BYTES: usize = 16 << 20;

/// Parse `name` and everything it includes.
pub fn load(name: &str, files: &dyn Files) -> Option<Config> {
    let mut found = files.read(name);
    if found.is_empty() {
        return None;
    }
    let (file, text) = found.remove(0);
    let mut p = Parser {
        files,
        cfg: Config::default(),
        current: None,
        in_block_comment: 0,
    };
    p.file(&file, &text, &mut vec![file.clone()]);
    Some(p.cfg)
}

/// Parse one text with no includes available (for tests and fuzzing).
pub fn parse(file: &str, text: &str) -> Config {
    struct None_;
    impl Files for None_ {
        fn read(&self, _: &str) -> Vec<(String, String)> {
            Vec::new()
        }
    }
    let mut p = Parser {
        files: &None_,
        cfg: Config::default(),
        current: None,
        in_block_comment: 0,
    };
    p.file(file, text, &mut vec![file.to_string()]);
    p.cfg
}

struct Parser<'f> {
    files: &'f dyn Files,
    cfg: Config,
    /// Index of the section variables go to.
    current: Option<usize>,
    /// Nesting depth of `;--` block comments.
    in_block_comment: u32,
}

impl Parser<'_> {
    fn note(&mut self, origin: Option<Origin>, message: impl Into<String>) {
        // Bounded: a hostile file cannot grow the notes without limit.
        if self.cfg.notes.len() < 1000 {
            self.cfg.notes.push(Note {
                origin,
                message: message.into(),
            });
        }
    }

    fn file(&mut self, file: &str, text: &str, stack: &mut Vec<String>) {
        self.cfg.files.push(file.to_string());
        if text.len() > MAX_FILE_BYTES {
            self.note(
                None,
                format!("{file} is larger than {MAX_FILE_BYTES} bytes; not read"),
            );
            return;
        }
        for (n, raw) in text.lines().enumerate() {
            let origin = Origin {
                file: file.to_string(),
                line: (n + 1).min(u32::MAX as usize) as u32,
            };
            let line = self.strip_comments(raw);
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(directive) = line.strip_prefix('#') {
                self.directive(directive, origin, stack);
            } else if line.starts_with('[') {
                self.header(line, origin);
            } else {
                self.variable(line, origin);
            }
        }
    }

    /// Remove comments, tracking block comments across lines, and unescape `\;`.
    fn strip_comments(&mut self, raw: &str) -> String {
        let mut out = String::with_capacity(raw.len());
        let b = raw.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if self.in_block_comment > 0 {
                if raw[i..].starts_with("--;") {
                    self.in_block_comment -= 1;
                    i += 3;
                } else if raw[i..].starts_with(";--") {
                    self.in_block_comment += 1;
                    i += 3;
                } else {
                    i += next_char(raw, i);
                }
                continue;
            }
            match b[i] {
                b'\\' if b.get(i + 1) == Some(&b';') => {
                    out.push(';');
                    i += 2;
                }
                b';' if raw[i..].starts_with(";--") => {
                    self.in_block_comment = 1;
                    i += 3;
                }
                b';' => break,
                _ => {
                    let n = next_char(raw, i);
                    out.push_str(&raw[i..i + n]);
                    i += n;
                }
            }
        }
        out
    }

    fn directive(&mut self, d: &str, origin: Origin, stack: &mut Vec<String>) {
        let (word, rest) = d.split_once(char::is_whitespace).unwrap_or((d, ""));
        let arg = unquote(rest.trim());
        match word.to_ascii_lowercase().as_str() {
            w @ ("include" | "tryinclude") => {
                if arg.is_empty() {
                    self.note(Some(origin), format!("#{w} without a file name"));
                    return;
                }
                if stack.len() >= MAX_DEPTH {
                    self.note(
                        Some(origin),
                        format!("#{w} {arg}: includes nested deeper than {MAX_DEPTH}; not read"),
                    );
                    return;
                }
                if self.files.outside(arg) {
                    self.note(
                        Some(origin),
                        format!("#{w} {arg}: outside the configuration directory; not read"),
                    );
                    return;
                }
                let found = self.files.read(arg);
                if found.is_empty() && w == "include" {
                    self.note(
                        Some(origin.clone()),
                        format!("#include {arg}: no such file (Asterisk would refuse this configuration)"),
                    );
                }
                for (name, text) in found {
                    if stack.contains(&name) {
                        self.note(
                            Some(origin.clone()),
                            format!("#{w} {name}: includes itself; not read again"),
                        );
                        continue;
                    }
                    if self.cfg.files.len() >= MAX_FILES {
                        self.note(
                            Some(origin.clone()),
                            format!("more than {MAX_FILES} files; {name} not read"),
                        );
                        return;
                    }
                    stack.push(name.clone());
                    self.file(&name, &text, stack);
                    stack.pop();
                }
            }
            "exec" => self.note(
                Some(origin),
                format!("#exec {arg}: programs are not run by discovery; its output is not seen"),
            ),
            _ => self.note(Some(origin), format!("unknown directive #{word}")),
        }
    }

    fn header(&mut self, line: &str, origin: Origin) {
        let Some(close) = line.find(']') else {
            self.note(Some(origin), format!("{line}: section header without `]`"));
            self.current = None;
            return;
        };
        let name = line[1..close].trim().to_string();
        let rest = line[close + 1..].trim();
        let mut template = false;
        let mut append = false;
        // `(+type=identify)`: append to the section of that name whose variables match.
        let mut filter: Vec<(String, String)> = Vec::new();
        let mut parents: Vec<&str> = Vec::new();
        let rest_opts = rest
            .trim_start_matches('(')
            .trim_end_matches(')')
            .to_string();
        if let Some(opts) = rest.strip_prefix('(') {
            let Some(opts) = opts.strip_suffix(')') else {
                self.note(
                    Some(origin),
                    format!("[{name}]: options without a closing `)`"),
                );
                self.current = None;
                return;
            };
            for o in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                match o {
                    "!" => template = true,
                    "+" => append = true,
                    f if f.starts_with('+') => {
                        append = true;
                        for cond in f[1..].split('&') {
                            let (k, v) = cond.split_once('=').unwrap_or((cond, ""));
                            filter.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                        }
                    }
                    t => parents.push(t),
                }
            }
        } else if !rest.is_empty() {
            self.note(
                Some(origin.clone()),
                format!("[{name}]: `{rest}` after the section name is ignored"),
            );
        }
        if append {
            let matches = |s: &Section| {
                s.name == name
                    && filter
                        .iter()
                        .all(|(k, v)| s.get(k).is_some_and(|x| x.value.eq_ignore_ascii_case(v)))
            };
            match self.cfg.sections.iter().rposition(matches) {
                Some(i) => self.current = Some(i),
                None => {
                    self.note(
                        Some(origin),
                        format!("[{name}]({rest_opts}) appends to a section not defined before it"),
                    );
                    self.current = None;
                }
            }
            return;
        }
        let mut vars = Vec::new();
        for parent in parents {
            match self.cfg.sections.iter().rev().find(|s| s.name == parent) {
                Some(p) => vars.extend(p.vars.iter().cloned()),
                None => self.note(
                    Some(origin.clone()),
                    format!("[{name}] inherits from `{parent}`, which is not defined before it"),
                ),
            }
        }
        self.cfg.sections.push(Section {
            name,
            template,
            vars,
            origin,
        });
        self.current = Some(self.cfg.sections.len() - 1);
    }

    fn variable(&mut self, line: &str, origin: Origin) {
        let Some(eq) = line.find('=') else {
            self.note(
                Some(origin),
                format!("`{line}` is neither a section nor a `key = value`"),
            );
            return;
        };
        let key = line[..eq].trim().to_ascii_lowercase();
        let value = line[eq + 1..].strip_prefix('>').unwrap_or(&line[eq + 1..]);
        let Some(i) = self.current else {
            self.note(
                Some(origin),
                format!("`{key}` is outside any section; ignored"),
            );
            return;
        };
        self.cfg.sections[i].vars.push(Var {
            key,
            value: value.trim().to_string(),
            origin,
        });
    }
}

fn next_char(s: &str, i: usize) -> usize {
    s[i..].chars().next().map_or(1, char::len_utf8)
}

fn unquote(s: &str) -> &str {
    for (open, close) in [('"', '"'), ('<', '>')] {
        if let Some(inner) = s.strip_prefix(open).and_then(|r| r.strip_suffix(close)) {
            return inner;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Mem(BTreeMap<&'static str, &'static str>);
    impl Files for Mem {
        fn read(&self, pattern: &str) -> Vec<(String, String)> {
            match pattern.strip_suffix('*') {
                Some(prefix) => self
                    .0
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                None => self
                    .0
                    .get(pattern)
                    .map(|v| vec![(pattern.to_string(), v.to_string())])
                    .unwrap_or_default(),
            }
        }
    }

    fn values(s: &Section) -> Vec<(String, String, String)> {
        s.vars
            .iter()
            .map(|v| (v.key.clone(), v.value.clone(), v.origin.to_string()))
            .collect()
    }

    #[test]
    fn comments_escapes_and_arrows() {
        let c = parse(
            "a.conf",
            "; top\n[general]\nbindport = 5060 ; inline\nsecret=a\\;b\nregister => u:p@h\n;-- block\nhidden=1\n--; shown=2\nx=1 ;-- one-line --; \n",
        );
        let g = &c.sections[0];
        assert_eq!(
            values(g),
            vec![
                ("bindport".into(), "5060".into(), "a.conf:3".into()),
                ("secret".into(), "a;b".into(), "a.conf:4".into()),
                ("register".into(), "u:p@h".into(), "a.conf:5".into()),
                ("shown".into(), "2".into(), "a.conf:8".into()),
                ("x".into(), "1".into(), "a.conf:9".into()),
            ]
        );
        assert!(c.notes.is_empty(), "{:?}", c.notes);
    }

    #[test]
    fn templates_inherit_in_order_and_append() {
        let c = parse(
            "p.conf",
            "[t](!)\ntype=identify\nmatch=1.2.3.4\n[u](!)\nmatch=5.6.7.8\n[x](t,u)\nendpoint=x\n[x](+)\nmatch=9.9.9.9\n[y](!,t)\n[x](+type=other)\nmatch=1.1.1.1\n[x](+type=identify)\nmatch=8.8.8.8\n",
        );
        let x = c.sections_named("x").next().unwrap();
        let m: Vec<_> = x.all("match").map(|v| v.value.as_str()).collect();
        assert_eq!(m, ["1.2.3.4", "5.6.7.8", "9.9.9.9", "8.8.8.8"]);
        // `(+type=other)` matches nothing: noted, and its variables belong to no section.
        assert_eq!(c.notes.len(), 2, "{:?}", c.notes);
        assert_eq!(x.get("type").unwrap().origin.to_string(), "p.conf:2");
        assert_eq!(c.objects().count(), 1, "templates are not objects");
        assert!(c.sections.iter().any(|s| s.name == "y" && s.template));
    }

    #[test]
    fn includes_continue_the_section_and_missing_ones_are_noted() {
        let files = Mem(BTreeMap::from([
            ("main.conf", "[general]\n#include \"more.conf\"\n#tryinclude absent.conf\n#include <gone.conf>\n#include part_*\nlast=1\n"),
            ("more.conf", "bindport=5160\n#include main.conf\n"),
            ("part_a", "[a]\nk=1\n"),
            ("part_b", "[b]\nk=2\n"),
        ]));
        let c = load("main.conf", &files).unwrap();
        let g = c.sections_named("general").next().unwrap();
        assert_eq!(g.get("bindport").unwrap().origin.to_string(), "more.conf:1");
        assert_eq!(c.sections.len(), 3);
        assert_eq!(
            c.sections[2].get("last").unwrap().origin.to_string(),
            "main.conf:6"
        );
        let notes: Vec<String> = c.notes.iter().map(|n| n.message.clone()).collect();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("includes itself"));
        assert!(notes[1].contains("gone.conf: no such file"));
        assert_eq!(c.files, ["main.conf", "more.conf", "part_a", "part_b"]);
        assert!(load("nothing.conf", &files).is_none());
    }

    #[test]
    fn odd_lines_are_noted_not_fatal() {
        let c = parse(
            "o.conf",
            "orphan=1\n[bad\n[ok](t\n[fine] junk\nnot a line\n#exec /bin/true\n#frob\n[z](missing)\n",
        );
        assert_eq!(c.notes.len(), 8, "{:?}", c.notes);
        assert_eq!(c.sections.len(), 2);
    }
}
