//! Resolves the Go-template actions of a Helm `image:` line from the chart's values, without a
//! template engine.
//!
//! Discovery does not render charts: rendering needs release data, capabilities and a
//! cluster, and a real engine would pull the whole Go template language in. Image lines use a
//! small, common subset, which this module evaluates:
//!
//! - fields: `.Values.a.b` (and `$.Values...`), `.Chart.AppVersion`, `.Chart.Version`,
//!   `.Chart.Name`; string and number literals; `( ... )` groups and `|` pipelines;
//! - functions: `default`, `coalesce`, `required`, `quote`, `squote`, `toString`, `trim`,
//!   `lower`, `upper`, `trimPrefix`, `trimSuffix`, `print`, `printf` (`%s`, `%v`, `%d`);
//! - `include`/`template` of a named template given an image root, as Bitnami's
//!   `{{ include "common.images.image" (dict "imageRoot" .Values.image "global" .Values.global) }}`:
//!   the first `.Values` argument that is an image map or string is the image;
//! - a whole line that is one action yielding an image map (`{{ .Values.image }}`) is read with
//!   the map convention of [`super::k8s`].
//!
//! Anything else (`.Release.Name`, variables, `with`/`range` context, `tpl`, other functions)
//! makes the line unresolved, with the reason: it is listed, never dropped.

use super::k8s::{image_map, MapContext};
use super::yaml::{Node, Value};

/// What an `image:` line is evaluated against.
#[derive(Debug, Clone)]
pub(crate) struct Context<'a> {
    /// The chart's values, with the parent's and `global` merged in.
    pub values: &'a Node,
    /// `.Chart.Name`.
    pub chart_name: &'a str,
    /// `.Chart.Version`.
    pub chart_version: &'a str,
    /// `.Chart.AppVersion`.
    pub app_version: Option<&'a str>,
    /// `global.imageRegistry`, for image maps.
    pub map: MapContext<'a>,
}

/// A rendered line: the text, and the values it read that were not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rendered {
    /// The text with every action replaced and outer quotes removed.
    pub text: String,
    /// `.Values` paths that were read but not set (they render empty).
    pub missing: Vec<String>,
    /// Every values path read, dotted and without `.Values.` (`image.tag`).
    pub read: Vec<String>,
}

/// Renders the value of an `image:` line; `Err` holds why it cannot be resolved.
pub(crate) fn render(text: &str, cx: &Context) -> Result<Rendered, String> {
    let mut eval = Eval {
        cx,
        missing: Vec::new(),
        read: Vec::new(),
    };
    let segments = segments(text)?;
    let actions: Vec<&Segment> = segments
        .iter()
        .filter(|s| matches!(s, Segment::Action(_)))
        .collect();
    let literal_is_quotes = segments.iter().all(|s| match s {
        Segment::Text(t) => t.trim().trim_matches(['"', '\'']).is_empty(),
        Segment::Action(_) => true,
    });
    // One action that yields an image map: the map convention.
    if let ([Segment::Action(body)], true) = (actions.as_slice(), literal_is_quotes) {
        if let Val::Node(node, _) = eval.action(body)? {
            if node.is_map() {
                return match image_map(node, &cx.map) {
                    Some((_, _, false)) => {
                        Err("the image map has no tag or digest and the chart picks one".to_owned())
                    }
                    Some((text, _, true)) => Ok(Rendered {
                        text,
                        missing: eval.missing,
                        read: eval.read,
                    }),
                    None => Err("the value is a map without `repository`".to_owned()),
                };
            }
        }
    }
    let mut out = String::new();
    for segment in &segments {
        match segment {
            Segment::Text(t) => out.push_str(t),
            Segment::Action(body) => {
                let value = eval.action(body)?;
                out.push_str(&eval.text(value)?);
            }
        }
    }
    Ok(Rendered {
        text: unquote(out.trim()).trim().to_owned(),
        missing: eval.missing,
        read: eval.read,
    })
}

/// `text` without one pair of matching outer quotes.
pub(crate) fn unquote(text: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = text.strip_prefix(q).and_then(|t| t.strip_suffix(q)) {
            return inner;
        }
    }
    text
}

#[derive(Debug)]
enum Segment {
    Text(String),
    /// The action's body, trim markers removed.
    Action(String),
}

fn segments(text: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..]
            .find("}}")
            .ok_or_else(|| "an unterminated template action".to_owned())?
            + start;
        let mut before = &rest[..start];
        let mut body = &rest[start + 2..end];
        if let Some(b) = body.strip_prefix("- ") {
            body = b;
            before = before.trim_end();
        }
        let mut after = &rest[end + 2..];
        if let Some(b) = body.strip_suffix(" -") {
            body = b;
            after = after.trim_start();
        }
        if !before.is_empty() {
            out.push(Segment::Text(before.to_owned()));
        }
        let body = body.trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            out.push(Segment::Action(body.to_owned()));
        }
        rest = after;
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest.to_owned()));
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Str(String),
    Word(String),
    Open,
    Close,
    Pipe,
}

fn tokenize(body: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(&ch) = chars.peek() {
        match ch {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | '|' => {
                chars.next();
                tokens.push(match ch {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Pipe,
                });
            }
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err("an unterminated string".to_owned()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(c) => s.push(c),
                            None => return Err("an unterminated string".to_owned()),
                        },
                        Some(c) => s.push(c),
                    }
                }
                tokens.push(Token::Str(s));
            }
            '`' => {
                chars.next();
                let s: String = chars.by_ref().take_while(|&c| c != '`').collect();
                tokens.push(Token::Str(s));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '|' | '"' | '`') {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(w));
            }
        }
    }
    Ok(tokens)
}

/// An argument of a command.
#[derive(Debug, Clone)]
enum Arg {
    Word(String),
    Str(String),
    Group(Pipeline),
}

/// Commands joined by `|`; each command is its arguments.
type Pipeline = Vec<Vec<Arg>>;

fn parse_pipeline(tokens: &[Token], pos: &mut usize) -> Result<Pipeline, String> {
    let mut pipeline = vec![Vec::new()];
    while *pos < tokens.len() {
        let token = &tokens[*pos];
        *pos += 1;
        let command = pipeline.last_mut().expect("never empty");
        match token {
            Token::Str(s) => command.push(Arg::Str(s.clone())),
            Token::Word(w) => command.push(Arg::Word(w.clone())),
            Token::Open => command.push(Arg::Group(parse_pipeline(tokens, pos)?)),
            Token::Close => return Ok(pipeline),
            Token::Pipe => pipeline.push(Vec::new()),
        }
    }
    Ok(pipeline)
}

/// A value while evaluating.
#[derive(Debug, Clone)]
enum Val<'a> {
    Text(String),
    /// A node of the values, with the path it was read at.
    Node(&'a Node, String),
    /// A `.Values` path that is not set.
    Missing(String),
}

struct Eval<'c, 'a> {
    cx: &'c Context<'a>,
    missing: Vec<String>,
    read: Vec<String>,
}

impl<'a> Eval<'_, 'a> {
    fn action(&mut self, body: &str) -> Result<Val<'a>, String> {
        let first = body.split_whitespace().next().unwrap_or("");
        if matches!(
            first,
            "if" | "else" | "end" | "range" | "with" | "define" | "block"
        ) || first.starts_with('$') && body.contains(":=")
        {
            return Err(format!("`{first}` blocks are not evaluated by discovery"));
        }
        let tokens = tokenize(body)?;
        let mut pos = 0;
        let pipeline = parse_pipeline(&tokens, &mut pos)?;
        if pos != tokens.len() {
            return Err("unbalanced parentheses".to_owned());
        }
        self.pipeline(&pipeline)
    }

    fn pipeline(&mut self, pipeline: &Pipeline) -> Result<Val<'a>, String> {
        let mut piped = None;
        for command in pipeline {
            piped = Some(self.command(command, piped)?);
        }
        piped.ok_or_else(|| "an empty action".to_owned())
    }

    fn command(&mut self, command: &[Arg], piped: Option<Val<'a>>) -> Result<Val<'a>, String> {
        match command.first() {
            None => Err("an empty command in a pipeline".to_owned()),
            Some(Arg::Word(name)) if name.starts_with(|c: char| c.is_ascii_alphabetic()) => {
                if matches!(name.as_str(), "true" | "false" | "nil") && command.len() == 1 {
                    return Ok(Val::Text(name.clone()));
                }
                self.function(name, &command[1..], piped)
            }
            Some(arg) if command.len() == 1 && piped.is_none() => self.term(arg),
            Some(_) => Err("arguments given to a value that is not a function".to_owned()),
        }
    }

    fn term(&mut self, arg: &Arg) -> Result<Val<'a>, String> {
        match arg {
            Arg::Str(s) => Ok(Val::Text(s.clone())),
            Arg::Group(p) => self.pipeline(p),
            Arg::Word(w) => self.field(w),
        }
    }

    fn field(&mut self, word: &str) -> Result<Val<'a>, String> {
        let field = word.strip_prefix('$').unwrap_or(word);
        if word.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
            return Ok(Val::Text(word.to_owned()));
        }
        if let Some(path) = field
            .strip_prefix(".Values")
            .filter(|p| p.is_empty() || p.starts_with('.'))
        {
            let keys: Vec<&str> = path.split('.').filter(|k| !k.is_empty()).collect();
            self.read.push(keys.join("."));
            return Ok(match self.cx.values.path(keys.iter().copied()) {
                Some(node) if node.value != Value::Null => Val::Node(node, field.to_owned()),
                _ => Val::Missing(field.to_owned()),
            });
        }
        match field {
            ".Chart.AppVersion" => Ok(self.cx.app_version.map_or_else(
                || Val::Missing(field.to_owned()),
                |v| Val::Text(v.to_owned()),
            )),
            ".Chart.Version" => Ok(Val::Text(self.cx.chart_version.to_owned())),
            ".Chart.Name" => Ok(Val::Text(self.cx.chart_name.to_owned())),
            _ if word.starts_with('$') && !word.starts_with("$.") => Err(format!(
                "the variable `{word}` is not evaluated by discovery"
            )),
            _ if [".Release", ".Capabilities", ".Template", ".Files"]
                .iter()
                .any(|p| field.starts_with(p)) =>
            {
                Err(format!("`{field}` is only known at install time"))
            }
            _ => Err(format!(
                "`{word}` depends on the context of a `with`/`range` block or a named template"
            )),
        }
    }

    /// The text of a value; a missing value is empty (as Helm renders it) and remembered.
    fn text(&mut self, value: Val<'a>) -> Result<String, String> {
        match value {
            Val::Text(t) => Ok(t),
            Val::Missing(path) => {
                if !self.missing.contains(&path) {
                    self.missing.push(path);
                }
                Ok(String::new())
            }
            Val::Node(node, path) => match &node.value {
                Value::Null => Ok(String::new()),
                Value::Str(s) | Value::Other(s) => Ok(s.clone()),
                Value::Map(_) | Value::Seq(_) => {
                    Err(format!("`{path}` is a map or list, not text"))
                }
            },
        }
    }

    fn is_empty(value: &Val) -> bool {
        match value {
            Val::Text(t) => t.is_empty(),
            Val::Missing(_) => true,
            Val::Node(node, _) => match &node.value {
                Value::Null => true,
                Value::Str(s) => s.is_empty(),
                Value::Other(s) => s == "false" || s == "0",
                Value::Map(m) => m.is_empty(),
                Value::Seq(s) => s.is_empty(),
            },
        }
    }

    fn function(
        &mut self,
        name: &str,
        args: &[Arg],
        piped: Option<Val<'a>>,
    ) -> Result<Val<'a>, String> {
        if matches!(name, "include" | "template") {
            return self.include(args);
        }
        let mut values = Vec::with_capacity(args.len() + 1);
        for arg in args {
            values.push(self.term(arg)?);
        }
        values.extend(piped);
        let arity = |n: usize| {
            if values.len() == n {
                Ok(())
            } else {
                Err(format!("`{name}` takes {n} argument(s)"))
            }
        };
        match name {
            "default" => {
                arity(2)?;
                let (fallback, given) = (values[0].clone(), values[1].clone());
                Ok(if Self::is_empty(&given) {
                    fallback
                } else {
                    given
                })
            }
            "coalesce" => {
                let first = values.iter().find(|v| !Self::is_empty(v)).cloned();
                Ok(first.unwrap_or(Val::Text(String::new())))
            }
            "required" => {
                arity(2)?;
                if Self::is_empty(&values[1]) {
                    let what = match &values[1] {
                        Val::Missing(p) | Val::Node(_, p) => format!("`{p}`"),
                        Val::Text(_) => "a value".to_owned(),
                    };
                    Err(format!("{what} is required but not set"))
                } else {
                    Ok(values[1].clone())
                }
            }
            "quote" | "squote" => {
                let q = if name == "quote" { '"' } else { '\'' };
                let mut parts = Vec::new();
                for v in values {
                    parts.push(format!("{q}{}{q}", self.text(v)?));
                }
                Ok(Val::Text(parts.join(" ")))
            }
            "toString" | "trim" | "lower" | "upper" => {
                arity(1)?;
                let text = self.text(values.remove(0))?;
                Ok(Val::Text(match name {
                    "trim" => text.trim().to_owned(),
                    "lower" => text.to_lowercase(),
                    "upper" => text.to_uppercase(),
                    _ => text,
                }))
            }
            "trimPrefix" | "trimSuffix" => {
                arity(2)?;
                let affix = self.text(values[0].clone())?;
                let text = self.text(values[1].clone())?;
                let out = if name == "trimPrefix" {
                    text.strip_prefix(&affix)
                } else {
                    text.strip_suffix(&affix)
                };
                Ok(Val::Text(out.unwrap_or(&text).to_owned()))
            }
            "print" => {
                let mut out = String::new();
                for v in values {
                    out.push_str(&self.text(v)?);
                }
                Ok(Val::Text(out))
            }
            "printf" => {
                if values.is_empty() {
                    return Err("`printf` needs a format".to_owned());
                }
                let format = self.text(values.remove(0))?;
                let mut args = Vec::new();
                for v in values {
                    args.push(self.text(v)?);
                }
                printf(&format, &args).map(Val::Text)
            }
            "tpl" => Err("`tpl` renders text that discovery does not evaluate".to_owned()),
            _ => Err(format!(
                "the template function `{name}` is not evaluated by discovery"
            )),
        }
    }

    /// `include "name" ARGS`: the first `.Values` path among the arguments that holds an image
    /// map or a reference string is the image.
    fn include(&mut self, args: &[Arg]) -> Result<Val<'a>, String> {
        let name = match args.first() {
            Some(Arg::Str(s)) => s.clone(),
            _ => "?".to_owned(),
        };
        let mut words = Vec::new();
        collect_words(&args[1.min(args.len())..], &mut words);
        for word in words {
            if let Ok(Val::Node(node, path)) = self.field(&word) {
                let is_image = match &node.value {
                    Value::Map(_) => node.get("repository").is_some(),
                    Value::Str(s) => !s.is_empty(),
                    _ => false,
                };
                if is_image {
                    return Ok(Val::Node(node, path));
                }
            }
        }
        Err(format!(
            "the named template `{name}` is not rendered by discovery and none of its arguments is an image"
        ))
    }
}

fn collect_words(args: &[Arg], out: &mut Vec<String>) {
    for arg in args {
        match arg {
            Arg::Word(w) if w.contains(".Values.") => out.push(w.clone()),
            Arg::Group(p) => {
                for command in p {
                    collect_words(command, out);
                }
            }
            _ => {}
        }
    }
}

fn printf(format: &str, args: &[String]) -> Result<String, String> {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('s' | 'v' | 'd') => match args.next() {
                Some(a) => out.push_str(a),
                None => return Err("`printf` has fewer arguments than its format".to_owned()),
            },
            other => {
                return Err(format!(
                    "the `printf` verb %{} is not evaluated by discovery",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::discover::yaml::parse_documents;

    const VALUES: &str = "\
image:
  repository: team/app
  tag: ''
sidecar: quay.io/tools/sidecar:2
pinned: {repository: team/pinned, tag: '2.0'}
global:
  imageRegistry: ''
nested: {deep: {name: x}}
";

    fn with_values<T>(f: impl FnOnce(&Context) -> T) -> T {
        let (docs, _) = parse_documents(VALUES, &Arc::from("values.yaml"));
        let cx = Context {
            values: &docs[0],
            chart_name: "app",
            chart_version: "0.1.0",
            app_version: Some("1.4.2"),
            map: MapContext {
                global_registry: None,
            },
        };
        f(&cx)
    }

    fn ok(text: &str) -> String {
        with_values(|cx| {
            render(text, cx)
                .unwrap_or_else(|e| panic!("{text}: {e}"))
                .text
        })
    }

    fn err(text: &str) -> String {
        with_values(|cx| render(text, cx).expect_err(text))
    }

    #[test]
    fn common_image_lines_resolve_from_values_and_chart() {
        assert_eq!(
            ok(
                r#""{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}""#
            ),
            "team/app:1.4.2"
        );
        assert_eq!(ok("{{ .Values.sidecar }}"), "quay.io/tools/sidecar:2");
        assert_eq!(
            ok("{{ .Values.sidecar | quote }}"),
            "quay.io/tools/sidecar:2"
        );
        assert_eq!(
            ok(
                r#"{{- printf "%s:%s" .Values.image.repository (default "9" .Values.image.tag) -}}"#
            ),
            "team/app:9"
        );
        assert_eq!(
            ok(
                r#"{{ include "common.images.image" (dict "imageRoot" .Values.pinned "global" $.Values.global) }}"#
            ),
            "team/pinned:2.0"
        );
        assert_eq!(ok("{{ .Values.pinned }}"), "team/pinned:2.0");
        // Without a tag the chart decides (`appVersion`, `printf "v%s"`): never guessed.
        assert!(err(
            r#"{{ include "common.images.image" (dict "imageRoot" .Values.image "global" $.Values.global) }}"#
        )
        .contains("no tag or digest"));
        assert!(err("{{ .Values.image }}").contains("no tag or digest"));
        assert_eq!(ok("'nginx:{{ .Chart.AppVersion }}'"), "nginx:1.4.2");
        assert_eq!(
            ok(r#"{{ coalesce .Values.nope .Values.sidecar | trimPrefix "quay.io/" }}"#),
            "tools/sidecar:2"
        );
    }

    #[test]
    fn missing_values_render_empty_and_are_reported() {
        let rendered = with_values(|cx| render("{{ .Values.registry }}/app:1", cx).unwrap());
        assert_eq!(rendered.text, "/app:1");
        assert_eq!(rendered.missing, [".Values.registry"]);
        assert_eq!(rendered.read, ["registry"]);
    }

    #[test]
    fn what_discovery_cannot_know_is_an_error_with_a_reason() {
        assert!(err("{{ .Release.Name }}:1").contains("only known at install time"));
        assert!(err("{{ .repository }}").contains("`with`/`range`"));
        assert!(err("{{ $img }}").contains("variable"));
        assert!(err(r#"{{ include "x.image" . }}"#).contains("named template `x.image`"));
        assert!(err("{{ .Values.nested }}").contains("without `repository`"));
        assert!(err("{{ .Values.nested }}:1").contains("map or list"));
        assert!(err("{{ if .Values.x }}a{{ end }}").contains("`if` blocks"));
        assert!(err(r#"{{ required "set image" .Values.nope }}"#).contains("required"));
        assert!(err("{{ .Values.sidecar | b64enc }}").contains("`b64enc`"));
        assert!(err("{{ .Values.sidecar").contains("unterminated"));
    }
}
