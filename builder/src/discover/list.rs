//! Plain image lists: one reference a line; `#` starts a comment (a whole line, or after
//! whitespace at the end of one); blank lines are skipped.

use std::path::Path;
use std::sync::Arc;

use super::{read_text, Certainty, Collector, Source};

/// Scans the list at `path`.
pub(crate) fn scan_file(path: &Path, c: &mut Collector) {
    let Some(text) = read_text(path, c) else {
        return;
    };
    scan_text(&text, c.display(path), c);
}

/// Scans list `text` read from `file`.
pub(crate) fn scan_text(text: &str, file: Arc<str>, c: &mut Collector) {
    for (index, line) in text.lines().enumerate() {
        let content = strip_comment(line).trim();
        if content.is_empty() {
            continue;
        }
        let source = Source {
            file: file.clone(),
            line: Some(index + 1),
            what: "list".to_owned(),
        };
        c.text(content, source, Certainty::Certain);
    }
}

fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    line.match_indices('#')
        .find(|(i, _)| line[..*i].ends_with([' ', '\t']))
        .map_or(line, |(i, _)| &line[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_skip_comments_and_blank_lines_and_keep_line_numbers() {
        let mut c = Collector::default();
        let text = "# images\nnginx\n\n  quay.io/a/b:1   # pinned later\nregistry.local:5000/app:1\nnot a ref\n${REG}/x:1\n";
        scan_text(text, Arc::from("images.txt"), &mut c);
        let found: Vec<(String, usize)> = c
            .found
            .iter()
            .map(|(r, s)| (r.to_string(), s[0].line.unwrap()))
            .collect();
        assert_eq!(
            found,
            [
                ("docker.io/library/nginx:latest".to_owned(), 2),
                ("quay.io/a/b:1".to_owned(), 4),
                ("registry.local:5000/app:1".to_owned(), 5),
            ]
        );
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].line, Some(6));
        assert!(c.warnings[0]
            .to_string()
            .starts_with("images.txt:6: invalid image reference `not a ref`"));
        assert_eq!(c.unresolved.len(), 1);
        assert_eq!(
            (c.unresolved[0].line, c.unresolved[0].text.as_str()),
            (7, "${REG}/x:1")
        );
    }
}
