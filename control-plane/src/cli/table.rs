//! Aligned plain-text output for humans.

/// Columns separated by two spaces, each as wide as its widest cell; the last one is not padded
/// so lines carry no trailing spaces.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `label  value` lines with the labels aligned.
pub fn details(fields: &[(&str, String)]) -> String {
    let width = fields
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    fields
        .iter()
        .map(|(label, value)| format!("{label:<width$}  {value}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let out = render(
            &["ID", "NAME"],
            &[
                vec!["ws_1".into(), "Acme".into()],
                vec!["ws_22222".into(), "B".into()],
            ],
        );
        assert_eq!(out, "ID        NAME\nws_1      Acme\nws_22222  B\n");
    }

    #[test]
    fn details_align_labels() {
        let out = details(&[("id", "k".into()), ("status", "active".into())]);
        assert_eq!(out, "id      k\nstatus  active\n");
    }
}
