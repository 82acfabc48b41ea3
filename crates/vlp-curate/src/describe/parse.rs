//! Reading a list out of a language model's free-form answer.

/// The items of a list-shaped answer, at most `n`, in order, without duplicates.
///
/// Accepts what chat models actually write: a JSON array of strings (also inside a ```` ``` ````
/// fence), a numbered or bulleted list (`1.`, `1)`, `-`, `*`, `•`) with a preamble such as
/// "Sure! Here are five descriptions:" and closing remarks (unmarked lines are dropped when
/// other lines carry markers), or plain lines. Reasoning models' `<think>…</think>` blocks are
/// removed first. Surrounding quotes and whitespace are trimmed from each item.
pub fn parse_list(answer: &str, n: usize) -> Vec<String> {
    let answer = strip_think(answer);
    let items = json_array(&answer).unwrap_or_else(|| marked_lines(&answer));
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let item = trim_item(&item);
        if !item.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(&item)) {
            out.push(item);
        }
        if out.len() == n {
            break;
        }
    }
    out
}

/// The answer without `<think>…</think>` blocks (an unclosed one runs to the end).
fn strip_think(answer: &str) -> String {
    let mut rest = answer;
    let mut out = String::new();
    while let Some(start) = rest.find("<think>") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</think>") {
            Some(end) => rest = &rest[start + end + "</think>".len()..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// A JSON array of strings, bare or in a code fence.
fn json_array(answer: &str) -> Option<Vec<String>> {
    let trimmed = answer.trim();
    let body = match trimmed.find("```") {
        Some(open) => {
            let after = &trimmed[open + 3..];
            // Skip the fence's language tag line ("json").
            let after = after.split_once('\n').map_or(after, |(_, b)| b);
            after.split("```").next().unwrap_or(after).trim()
        }
        None => trimmed,
    };
    if !body.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(body).ok()
}

/// The text after a list marker, if the line starts with one.
fn after_marker(line: &str) -> Option<&str> {
    let line = line.trim_start();
    for bullet in ["- ", "* ", "• ", "– ", "— "] {
        if let Some(rest) = line.strip_prefix(bullet) {
            return Some(rest);
        }
    }
    let digits = line.chars().take_while(|c| c.is_ascii_digit()).count();
    if (1..=3).contains(&digits) {
        let rest = &line[digits..];
        for sep in [". ", ") ", ": ", ".\t"] {
            if let Some(item) = rest.strip_prefix(sep) {
                return Some(item);
            }
        }
    }
    None
}

/// Marked lines when any line is marked, else every non-empty line.
fn marked_lines(answer: &str) -> Vec<String> {
    let lines: Vec<&str> = answer.lines().filter(|l| !l.trim().is_empty()).collect();
    let marked: Vec<String> = lines
        .iter()
        .filter_map(|l| after_marker(l))
        .map(str::to_string)
        .collect();
    if marked.is_empty() {
        lines.iter().map(|l| l.to_string()).collect()
    } else {
        marked
    }
}

/// Whitespace, emphasis and one pair of surrounding quotes removed.
fn trim_item(item: &str) -> String {
    let mut s = item.trim().trim_matches('*').trim();
    for (open, close) in [('"', '"'), ('“', '”'), ('\'', '\'')] {
        if s.len() >= 2 && s.starts_with(open) && s.ends_with(close) {
            s = s[open.len_utf8()..s.len() - close.len_utf8()].trim();
            break;
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_list_with_preamble_and_remarks() {
        let answer = "Sure! Here are 3 descriptions of a red circle:\n\n\
                      1. A round shape filled with bright red.\n\
                      2) \"A red disc with a smooth edge.\"\n\
                      3. **A circle, coloured red.**\n\n\
                      Let me know if you need more!";
        assert_eq!(
            parse_list(answer, 5),
            vec![
                "A round shape filled with bright red.",
                "A red disc with a smooth edge.",
                "A circle, coloured red."
            ]
        );
        assert_eq!(parse_list(answer, 2).len(), 2);
    }

    #[test]
    fn bullets_json_fences_plain_lines_and_thinking() {
        assert_eq!(
            parse_list("- one\n* two\n• three\n- one", 10),
            vec!["one", "two", "three"]
        );
        assert_eq!(
            parse_list("```json\n[\"a red disc\", \"a round red shape\"]\n```", 10),
            vec!["a red disc", "a round red shape"]
        );
        assert_eq!(parse_list("[\"x\", \"y\", \"z\"]", 2), vec!["x", "y"]);
        assert_eq!(
            parse_list("first line\n\nsecond line\n", 10),
            vec!["first line", "second line"]
        );
        assert_eq!(
            parse_list("<think>1. not this\n2. nor this</think>\n1. this", 10),
            vec!["this"]
        );
        assert!(parse_list("<think>unfinished", 3).is_empty());
        assert!(parse_list("   \n\n", 3).is_empty());
        // A year is not a list marker.
        assert_eq!(parse_list("1999 was a year", 3), vec!["1999 was a year"]);
    }
}
