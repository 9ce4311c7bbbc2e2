//! YAML documents as trees whose every node knows its file and line.
//!
//! serde_yaml_ng's `Value` drops positions, so discovery reads YAML with saphyr, whose
//! `MarkedYaml` carries a span on every node, and copies it into [`Node`]: an owned tree that
//! also remembers the file a node came from (Helm values of a parent chart are merged into a
//! subchart's, and a merged tree mixes files).
//!
//! A multi-document stream is split at its `---` lines and each document is parsed on its
//! own, so one broken document costs a warning at its line, not the rest of the file. A
//! `---` at the start of a line always starts a document in YAML (inside block scalars too),
//! so the split never cuts a document in two.

use std::sync::Arc;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// A YAML node with its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The file it was read from, as shown to users.
    pub file: Arc<str>,
    /// 1-based line where the node starts.
    pub line: usize,
    /// What it holds.
    pub value: Value,
}

/// The content of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// A string.
    Str(String),
    /// A number or boolean, as text (`1.25`, `true`).
    Other(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with scalar keys, in document order (other keys are left out).
    Map(Vec<(String, Node)>),
}

impl Node {
    /// A mapping with nothing in it, attributed to `file`.
    pub fn empty_map(file: Arc<str>) -> Node {
        Node {
            file,
            line: 1,
            value: Value::Map(Vec::new()),
        }
    }

    /// The value under `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The node at a dotted path of mapping keys.
    pub fn path<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Option<&Node> {
        keys.into_iter().try_fold(self, |node, key| node.get(key))
    }

    /// The text of a string or other scalar; `None` for null and collections.
    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) | Value::Other(s) => Some(s),
            _ => None,
        }
    }

    /// The text of a non-empty string or other scalar.
    pub fn non_empty_text(&self) -> Option<&str> {
        self.as_text().filter(|s| !s.trim().is_empty())
    }

    /// Whether this is a mapping.
    pub fn is_map(&self) -> bool {
        matches!(self.value, Value::Map(_))
    }

    /// Merges `over` into `self` the way Helm coalesces values: mappings merge key by key,
    /// any other value of `over` replaces, and a null in `over` deletes the key.
    pub fn merge(&mut self, over: &Node) {
        let (Value::Map(base), Value::Map(top)) = (&mut self.value, &over.value) else {
            *self = over.clone();
            return;
        };
        for (key, value) in top {
            let existing = base.iter().position(|(k, _)| k == key);
            match (existing, &value.value) {
                (Some(i), Value::Null) => {
                    base.remove(i);
                }
                (Some(i), _) => base[i].1.merge(value),
                (None, Value::Null) => {}
                (None, _) => base.push((key.clone(), value.clone())),
            }
        }
    }
}

/// A document that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line of the error.
    pub line: usize,
    /// The parser's message.
    pub message: String,
}

/// Parses every document of `text`; documents that do not parse become [`ParseError`]s and
/// the others are still returned. Empty documents are left out.
pub fn parse_documents(text: &str, file: &Arc<str>) -> (Vec<Node>, Vec<ParseError>) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (offset, chunk) in split_documents(text) {
        match MarkedYaml::load_from_str(&chunk) {
            Ok(parsed) => docs.extend(
                parsed
                    .iter()
                    .map(|doc| convert(doc, file, offset))
                    .filter(|doc| doc.value != Value::Null),
            ),
            Err(err) => errors.push(ParseError {
                line: err.marker().line() + offset,
                message: err.info().to_owned(),
            }),
        }
    }
    (docs, errors)
}

/// Splits a YAML stream into documents at `---` lines: (lines before the chunk, chunk). A
/// `---` only starts a new chunk once the current one holds content, so directives and
/// comments stay with the document they precede.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut current = String::new();
    let mut has_content = false;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let marker = line
            .strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']));
        if marker && has_content {
            chunks.push((start, std::mem::take(&mut current)));
            start = index;
            has_content = false;
        }
        let trimmed = line.trim();
        if marker || !(trimmed.is_empty() || trimmed.starts_with('#') || line.starts_with('%')) {
            has_content = true;
        }
        current.push_str(line);
    }
    if has_content {
        chunks.push((start, current));
    }
    chunks
}

fn convert(node: &MarkedYaml, file: &Arc<str>, offset: usize) -> Node {
    let line = node.span.start.line() + offset;
    let value = match &node.data {
        YamlData::Value(scalar) => match scalar {
            Scalar::Null => Value::Null,
            Scalar::Boolean(b) => Value::Other(b.to_string()),
            Scalar::Integer(i) => Value::Other(i.to_string()),
            Scalar::FloatingPoint(f) => Value::Other(f.to_string()),
            Scalar::String(s) => Value::Str(s.to_string()),
        },
        YamlData::Representation(text, _, _) => Value::Str(text.to_string()),
        YamlData::Sequence(items) => {
            Value::Seq(items.iter().map(|n| convert(n, file, offset)).collect())
        }
        YamlData::Mapping(entries) => Value::Map(
            entries
                .iter()
                .filter_map(|(k, v)| {
                    let key = convert(k, file, offset);
                    let key = key.as_text()?.to_owned();
                    Some((key, convert(v, file, offset)))
                })
                .collect(),
        ),
        YamlData::Tagged(_, inner) => return convert(inner, file, offset),
        YamlData::Alias(_) | YamlData::BadValue => Value::Null,
    };
    Node {
        file: file.clone(),
        line,
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<Node>, Vec<ParseError>) {
        parse_documents(text, &Arc::from("f.yaml"))
    }

    #[test]
    fn nodes_carry_their_line_across_documents() {
        let (docs, errors) = parse("# head\na: 1\n---\nb:\n  c: x\n---\n\n---\nd: [y, 'z']\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].get("a").unwrap().line, 2);
        assert_eq!(docs[0].get("a").unwrap().value, Value::Other("1".into()));
        let c = docs[1].path(["b", "c"]).unwrap();
        assert_eq!((c.line, c.as_text()), (5, Some("x")));
        let Value::Seq(items) = &docs[2].get("d").unwrap().value else {
            panic!("a sequence")
        };
        assert_eq!(items[1].line, 9);
        assert_eq!(&*items[1].file, "f.yaml");
    }

    #[test]
    fn a_broken_document_is_reported_at_its_line_and_the_others_are_kept() {
        let (docs, errors) = parse("a: 1\n---\nb: [1,\nc: 2\n---\nd: 3\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].get("d").unwrap().line, 6);
        assert_eq!(errors.len(), 1);
        assert!((3..=5).contains(&errors[0].line), "{errors:?}");
    }

    #[test]
    fn dashes_inside_a_line_or_directives_do_not_split() {
        let (docs, errors) = parse("%YAML 1.2\n---\na: \"x --- y\"\nb: |\n  text\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].get("a").unwrap().as_text(), Some("x --- y"));
        assert_eq!(docs[0].get("a").unwrap().line, 3);
        assert_eq!(docs[0].get("b").unwrap().as_text(), Some("text\n"));
    }

    #[test]
    fn merge_follows_helm_coalescing() {
        let (mut base, _) = parse("image: {repository: a, tag: '1'}\nkeep: 1\ndrop: 2\n");
        let (over, _) = parse("image: {tag: '2'}\ndrop: null\nnew: x\n");
        base[0].merge(&over[0]);
        let doc = &base[0];
        assert_eq!(
            doc.path(["image", "repository"]).unwrap().as_text(),
            Some("a")
        );
        assert_eq!(doc.path(["image", "tag"]).unwrap().as_text(), Some("2"));
        assert!(doc.get("drop").is_none());
        assert_eq!(doc.get("new").unwrap().as_text(), Some("x"));
        assert_eq!(doc.get("keep").unwrap().as_text(), Some("1"));
    }
}
