package tui

import (
	"fmt"
	"math"
	"strings"

	"charm.land/lipgloss/v2"
)

// graphSpan is how many samples a history graph spans: the sampler's 5-minute ring at 1 Hz.
const graphSpan = 300

// brailleBits[c][r] is the dot of column c (0 left, 1 right) and row r (0 top … 3 bottom) of a
// braille cell.
var brailleBits = [2][4]rune{{0x01, 0x02, 0x04, 0x40}, {0x08, 0x10, 0x20, 0x80}}

// paint wraps text in a style's escape sequences, computed once per style: far cheaper than
// Render on every graph row, which keeps a full frame within the bench's budget.
type paint struct{ pre, post string }

func newPaint(st lipgloss.Style) paint {
	pre, post, _ := strings.Cut(st.Render("\x00"), "\x00")
	return paint{pre, post}
}

func (p paint) on(s string) string {
	if s == "" {
		return ""
	}
	return p.pre + s + p.post
}

// graph is one history graph: a title row, rows of braille area chart with a labelled y axis,
// and a time axis.
type graph struct {
	title  string    // left of the title row
	now    string    // right of the title row: the current reading
	vals   []float64 // oldest first; < 0 is n/a (a gap)
	lo, hi float64
	unit   string // for the y labels
	stepMS int64  // between samples
	ink    paint
	limit  float64 // drawn as a dotted row when > 0 (a power limit); 0: none
}

// render draws the graph in exactly w×h cells (h ≥ 3; fewer rows give fewer lines).
func (g graph) render(m *Model, w, h int) []string {
	if h <= 0 || w <= 0 {
		return nil
	}
	out := []string{fit(m.styles.title.Render(g.title)+"  "+g.now, w)}
	if h < 3 || w < 12 {
		return padLines(out, w, h)
	}
	rows := h - 2
	labW := max(len(yLabel(g.hi, g.unit)), len(yLabel(g.lo, g.unit)))
	cols := w - labW - 1
	dotsX, dotsY := cols*2, rows*4
	span := float64(graphSpan)
	hi := g.hi
	if hi <= g.lo {
		hi = g.lo + 1
	}
	// heights[x] is the filled dots of dot column x, -1 where there is no sample.
	heights := make([]int, dotsX)
	n := len(g.vals)
	for x := range dotsX {
		age := int(math.Round(float64(dotsX-1-x) * span / float64(dotsX)))
		i := n - 1 - age
		if i < 0 || g.vals[i] < 0 {
			heights[x] = -1
			continue
		}
		f := (g.vals[i] - g.lo) / (hi - g.lo)
		heights[x] = max(0, min(dotsY, int(math.Round(f*float64(dotsY)))))
		if heights[x] == 0 && g.vals[i] > g.lo {
			heights[x] = 1 // a non-zero reading never vanishes
		}
	}
	limitRow := -1
	if g.limit > 0 && g.limit <= hi {
		limitRow = rows - 1 - min(rows-1, int((g.limit-g.lo)/(hi-g.lo)*float64(rows)))
	}
	var b strings.Builder
	dim, blank := m.paints().dim, strings.Repeat(" ", labW)
	for r := range rows {
		b.Reset()
		b.Grow(len(dim.pre) + labW + len(dim.post) + len(g.ink.pre) + cols*3 + len(g.ink.post) + 8)
		label := blank
		axis := "│"
		switch r {
		case 0:
			label, axis = pad(yLabel(hi, g.unit), labW), "┤"
		case rows - 1:
			label, axis = pad(yLabel(g.lo, g.unit), labW), "┤"
		case rows / 2:
			if rows >= 5 {
				label, axis = pad(yLabel(g.lo+(hi-g.lo)/2, g.unit), labW), "┤"
			}
		}
		b.WriteString(dim.pre)
		b.WriteString(label)
		b.WriteString(axis)
		b.WriteString(dim.post)
		b.WriteString(g.ink.pre)  // the row's cells are never empty (cols ≥ 1), as paint.on wants
		top := (rows - 1 - r) * 4 // dots below this row
		for c := range cols {
			var bits rune
			for side := range 2 {
				hgt := heights[c*2+side]
				for dr := range 4 {
					if hgt > top+(3-dr) {
						bits |= brailleBits[side][dr]
					}
				}
			}
			switch {
			case bits != 0:
				b.WriteRune(0x2800 + bits)
			case r == limitRow:
				b.WriteRune('┄')
			default:
				b.WriteByte(' ')
			}
		}
		b.WriteString(g.ink.post)
		out = append(out, b.String())
	}
	out = append(out, m.paints().dim.on(timeAxis(labW, cols, g.stepMS)))
	return out
}

func yLabel(v float64, unit string) string {
	switch {
	case unit == "%":
		return fmt.Sprintf("%.0f%%", v)
	case unit == "G" || v >= 10000 && unit == "M":
		return fmt.Sprintf("%.0fG", v/1024)
	case math.Abs(v) >= 100 || v == math.Trunc(v):
		return fmt.Sprintf("%.0f%s", v, unit)
	default:
		return fmt.Sprintf("%.1f%s", v, unit)
	}
}

// timeAxis labels the graph's span: "-5m" at the left, "-2m30s" in the middle, "now" right.
// The span is rounded to whole seconds, so a measured step of 999 or 1001 ms labels it 5m00s
// in every frame rather than flipping to 4m59s.
func timeAxis(labW, cols int, stepMS int64) string {
	if stepMS <= 0 {
		stepMS = 1000
	}
	spanMS := (stepMS*graphSpan + 500) / 1000 * 1000
	left, mid := "-"+dur(spanMS), "-"+dur(spanMS/2)
	line := []rune(strings.Repeat(" ", labW+1+cols))
	put := func(at int, s string) {
		for i, r := range s {
			if at+i >= 0 && at+i < len(line) {
				line[at+i] = r
			}
		}
	}
	put(labW+1, left)
	if cols > 3*len(mid) {
		put(labW+1+cols/2-len(mid)/2, mid)
	}
	put(labW+1+cols-3, "now")
	return string(line)
}

// spark draws a small history scaled to [lo, hi] (hi ≤ lo: scaled to the values' maximum).
func spark(vals []float64, lo, hi float64, width int) string {
	if width <= 0 {
		return ""
	}
	if len(vals) > width {
		vals = vals[len(vals)-width:]
	}
	if hi <= lo {
		for _, v := range vals {
			hi = max(hi, v)
		}
		if hi <= lo {
			hi = lo + 1
		}
	}
	var b strings.Builder
	for range width - len(vals) {
		b.WriteByte(' ')
	}
	for _, v := range vals {
		if v < 0 {
			b.WriteRune('·')
			continue
		}
		f := (v - lo) / (hi - lo)
		b.WriteRune(sparks[max(0, min(len(sparks)-1, int(f*float64(len(sparks)-1)+0.5)))])
	}
	return b.String()
}

// fit cuts or pads a styled line to exactly w cells.
func fit(s string, w int) string {
	n := cellWidth(s)
	if n > w {
		s = cut(s, w)
		n = cellWidth(s)
	}
	if n >= w {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + w - n)
	b.WriteString(s)
	for range w - n {
		b.WriteByte(' ')
	}
	return b.String()
}

func pad(s string, w int) string {
	if n := len([]rune(s)); n < w {
		return strings.Repeat(" ", w-n) + s
	}
	return s
}

// padLines returns exactly h lines of w cells.
func padLines(lines []string, w, h int) []string {
	if len(lines) > h {
		lines = lines[:h]
	}
	for i := range lines {
		lines[i] = fit(lines[i], w)
	}
	for len(lines) < h {
		lines = append(lines, strings.Repeat(" ", w))
	}
	return lines
}

// beside joins two columns of lines, each fitted to its width, with a gap between.
func beside(left []string, lw int, right []string, rw int) []string {
	n := max(len(left), len(right))
	left, right = padLines(left, lw, n), padLines(right, rw, n)
	out := make([]string, n)
	for i := range n {
		out[i] = left[i] + " " + right[i]
	}
	return out
}
