//! WebDataset-style brace expansion of shard patterns.

/// Expands `{a..b}` numeric ranges (zero-padded to the width of `a`) and `{x,y,z}` lists, as
/// webdataset's `braceexpand` does: `shards-{000..002}.tar` → three names.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| format!("unclosed '{{' in \"{pattern}\""))?;
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let items: Vec<String> = if let Some((a, b)) = body.split_once("..") {
        let (lo, hi): (u64, u64) = (
            a.parse()
                .map_err(|_| format!("\"{a}\" is not a number in \"{pattern}\""))?,
            b.parse()
                .map_err(|_| format!("\"{b}\" is not a number in \"{pattern}\""))?,
        );
        if lo > hi {
            return Err(format!("empty range {{{body}}} in \"{pattern}\""));
        }
        (lo..=hi)
            .map(|i| format!("{i:0width$}", width = a.len()))
            .collect()
    } else {
        body.split(',').map(str::to_string).collect()
    };
    let mut out = Vec::new();
    for item in items {
        for rest in expand_braces(tail)? {
            out.push(format!("{head}{item}{rest}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_lists_and_nesting() {
        assert_eq!(expand_braces("a.tar").unwrap(), vec!["a.tar"]);
        assert_eq!(
            expand_braces("s-{008..011}.tar").unwrap(),
            vec!["s-008.tar", "s-009.tar", "s-010.tar", "s-011.tar"]
        );
        assert_eq!(
            expand_braces("{x,y}/{0..1}").unwrap(),
            vec!["x/0", "x/1", "y/0", "y/1"]
        );
        assert!(expand_braces("s-{3..1}.tar").is_err());
        assert!(expand_braces("s-{3..1.tar").is_err());
    }
}
