//! Go's `text/tabwriter` (left-aligned, space padding), which kubectl uses
//! for `get` tables (min width 6, padding 3) and `describe` (padding 2).
//!
//! Cells are tab-terminated; the text after a line's last tab is not a
//! cell and is never padded. A column's width is computed per block of
//! consecutive lines that have a cell in that column, so a line without a
//! tab ends the alignment of the lines above it, exactly as in Go.

/// Aligns `text` as a Go `tabwriter.Writer` flushed once would.
pub fn align(text: &str, min_width: usize, padding: usize) -> String {
    let lines: Vec<Vec<&str>> = text
        .split_inclusive('\n')
        .map(|l| l.strip_suffix('\n').unwrap_or(l).split('\t').collect())
        .collect();
    let newline_at_end: Vec<bool> = text
        .split_inclusive('\n')
        .map(|l| l.ends_with('\n'))
        .collect();
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    let mut widths = Vec::new();
    let fmt = Format {
        lines: &lines,
        newline: &newline_at_end,
        min_width,
        padding,
    };
    fmt.format(&mut out, &mut widths, 0, lines.len());
    out
}

struct Format<'a> {
    lines: &'a [Vec<&'a str>],
    newline: &'a [bool],
    min_width: usize,
    padding: usize,
}

fn width(s: &str) -> usize {
    s.chars().count()
}

impl Format<'_> {
    fn format(&self, out: &mut String, widths: &mut Vec<usize>, mut line0: usize, line1: usize) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= self.lines[this].len() {
                this += 1;
                continue;
            }
            self.write_lines(out, widths, line0, this);
            line0 = this;
            let mut w = self.min_width;
            while this < line1 && column + 1 < self.lines[this].len() {
                w = w.max(width(self.lines[this][column]) + self.padding);
                this += 1;
            }
            widths.push(w);
            self.format(out, widths, line0, this);
            widths.pop();
            line0 = this;
        }
        self.write_lines(out, widths, line0, line1);
    }

    fn write_lines(&self, out: &mut String, widths: &[usize], line0: usize, line1: usize) {
        for i in line0..line1 {
            let cells = &self.lines[i];
            for (j, cell) in cells.iter().enumerate() {
                out.push_str(cell);
                if j + 1 < cells.len()
                    && let Some(w) = widths.get(j)
                {
                    for _ in width(cell)..*w {
                        out.push(' ');
                    }
                }
            }
            if self.newline[i] {
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::align;

    #[test]
    fn kubectl_get_table() {
        let t = "NAME\tREADY\tSTATUS\tRESTARTS\tAGE\nweb\t1/1\tRunning\t0\t5s\n";
        assert_eq!(
            align(t, 6, 3),
            "NAME   READY   STATUS    RESTARTS   AGE\nweb    1/1     Running   0          5s\n"
        );
    }

    #[test]
    fn blocks_end_at_lines_without_tabs() {
        let t = "Name:\tweb\nNamespace:\tdefault\nIPs:\n  IP:\t10.0.0.1\nQoS Class:\tBestEffort\n";
        assert_eq!(
            align(t, 0, 2),
            "Name:       web\nNamespace:  default\nIPs:\n  IP:       10.0.0.1\nQoS Class:  BestEffort\n"
        );
    }

    #[test]
    fn nested_columns_align_per_block() {
        let t = "a\tb\tc\nlonger\tx\ty\n";
        assert_eq!(align(t, 0, 1), "a      b c\nlonger x y\n");
    }
}
