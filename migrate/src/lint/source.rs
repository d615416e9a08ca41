//! A migration file as statements with their first line, and the `-- gcbb:allow` comments attached
//! to each, all located with Postgres's own scanner and parser.

use pg_query::protobuf::Token;
use pg_query::NodeEnum;

/// The comment prefix of an allow directive.
const ALLOW_MARKER: &str = "gcbb:allow";

/// `-- gcbb:allow <rule> <reason>`, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AllowDirective {
    pub line: usize,
    /// Empty when the comment names no rule.
    pub rule: String,
    /// Empty when the comment gives no reason.
    pub reason: String,
}

pub(super) struct Statement {
    pub node: NodeEnum,
    /// 1-based line of the statement's first token.
    pub line: usize,
    pub excerpt: String,
    /// Indexes into `Source::allows` of the allows on the comment lines right above.
    pub allows: Vec<usize>,
}

pub(super) struct Source {
    pub statements: Vec<Statement>,
    pub allows: Vec<AllowDirective>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    Blank,
    Comment,
    Code,
}

struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(sql: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            sql.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Lines { starts }
    }

    /// 1-based line of a byte offset.
    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset)
    }

    fn count(&self) -> usize {
        self.starts.len()
    }
}

fn is_comment(token: i32) -> bool {
    token == Token::SqlComment as i32 || token == Token::CComment as i32
}

/// Error: (1-based line, Postgres's message).
type Located = (usize, String);

impl Source {
    pub fn parse(sql: &str) -> Result<Source, Located> {
        let lines = Lines::new(sql);
        if let Some(nul) = sql.find('\0') {
            return Err((lines.line_of(nul), "NUL byte in SQL".to_owned()));
        }
        let tokens = match pg_query::scan(sql) {
            Ok(scan) => scan.tokens,
            Err(e) => return Err((locate_scan_error(sql, &lines), e.to_string())),
        };
        let parsed = match pg_query::parse(sql) {
            Ok(parsed) => parsed,
            Err(e) => return Err((locate_parse_error(sql, &lines, &tokens), e.to_string())),
        };

        let code_tokens: Vec<(usize, usize)> = tokens
            .iter()
            .filter(|t| !is_comment(t.token))
            .map(|t| (t.start as usize, t.end as usize))
            .collect();
        let line_kinds = line_kinds(&lines, &tokens);
        let allows = allow_directives(sql, &lines, &tokens);

        let mut statements = Vec::new();
        for raw in parsed.protobuf.stmts {
            let Some(node) = raw.stmt.and_then(|s| s.node) else {
                continue;
            };
            let location = raw.stmt_location.max(0) as usize;
            let end = match raw.stmt_len {
                0 => sql.len(),
                len => location + len.max(0) as usize,
            };
            // The parser's location includes comments and blanks after the previous `;`.
            // Tokens come in source order.
            let next = code_tokens.partition_point(|&(start, _)| start < location);
            let first = code_tokens
                .get(next)
                .map(|&(start, _)| start)
                .filter(|&start| start < end)
                .unwrap_or(location);
            let line = lines.line_of(first);
            let excerpt = super::excerpt(sql.get(first..end).unwrap_or_default());
            let attached = attached_comment_lines(&line_kinds, line);
            let allows = allows
                .iter()
                .enumerate()
                .filter(|(_, allow)| attached.contains(&allow.line))
                .map(|(index, _)| index)
                .collect();
            statements.push(Statement {
                node,
                line,
                excerpt,
                allows,
            });
        }
        Ok(Source { statements, allows })
    }
}

/// What each line holds; index 0 is line 1. A line is `Comment` when comments are all it holds.
fn line_kinds(lines: &Lines, tokens: &[pg_query::protobuf::ScanToken]) -> Vec<LineKind> {
    let mut kinds = vec![LineKind::Blank; lines.count()];
    let mut mark = |start: i32, end: i32, kind: LineKind| {
        let first = lines.line_of(start.max(0) as usize);
        let last = lines.line_of((end.max(1) - 1).max(start) as usize);
        for line in first..=last {
            let slot = &mut kinds[line - 1];
            if *slot != LineKind::Code {
                *slot = kind;
            }
        }
    };
    for token in tokens.iter().filter(|t| !is_comment(t.token)) {
        mark(token.start, token.end, LineKind::Code);
    }
    for token in tokens.iter().filter(|t| is_comment(t.token)) {
        mark(token.start, token.end, LineKind::Comment);
    }
    kinds
}

/// The comment-only lines directly above `line`, up to the first blank or code line.
fn attached_comment_lines(kinds: &[LineKind], line: usize) -> Vec<usize> {
    (1..line)
        .rev()
        .take_while(|&above| kinds[above - 1] == LineKind::Comment)
        .collect()
}

fn allow_directives(
    sql: &str,
    lines: &Lines,
    tokens: &[pg_query::protobuf::ScanToken],
) -> Vec<AllowDirective> {
    tokens
        .iter()
        .filter(|t| t.token == Token::SqlComment as i32)
        .filter_map(|t| {
            let text = sql.get(t.start as usize..t.end as usize)?;
            let body = text.trim_start_matches('-').trim();
            let rest = body.strip_prefix(ALLOW_MARKER)?;
            if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
                return None;
            }
            let mut words = rest.trim().splitn(2, char::is_whitespace);
            let rule = words.next().unwrap_or_default().to_owned();
            let reason = words.next().unwrap_or_default().trim().to_owned();
            Some(AllowDirective {
                line: lines.line_of(t.start as usize),
                rule,
                reason,
            })
        })
        .collect()
}

/// The first line of the statement that breaks the file: the longest prefix ending at a `;` that
/// still parses marks the last good statement; the error is in the next one. (The `pg_query` crate
/// drops Postgres's cursor position from its error.) Quadratic, but only on the error path.
fn locate_parse_error(sql: &str, lines: &Lines, tokens: &[pg_query::protobuf::ScanToken]) -> usize {
    let mut last_good_end = 0;
    for semicolon in tokens.iter().filter(|t| t.token == Token::Ascii59 as i32) {
        let end = semicolon.end as usize;
        if sql
            .get(..end)
            .is_some_and(|prefix| pg_query::parse(prefix).is_ok())
        {
            last_good_end = end;
        }
    }
    let start = tokens
        .iter()
        .filter(|t| !is_comment(t.token))
        .map(|t| t.start as usize)
        .find(|&start| start >= last_good_end)
        .unwrap_or(last_good_end);
    lines.line_of(start)
}

/// The line where an unterminated literal or comment opens: one past the last line whose prefix
/// still scans.
fn locate_scan_error(sql: &str, lines: &Lines) -> usize {
    let mut last_good = 0;
    for line in 1..=lines.count() {
        let end = lines.starts.get(line).copied().unwrap_or(sql.len());
        if sql
            .get(..end)
            .is_some_and(|prefix| pg_query::scan(prefix).is_ok())
        {
            last_good = line;
        }
    }
    (last_good + 1).min(lines.count())
}
