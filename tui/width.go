package tui

import (
	"unicode/utf8"

	"github.com/charmbracelet/x/ansi"
)

// narrow reports whether a rune is one the console draws that is always one cell wide, so its
// width needs no grapheme segmentation: ASCII, Latin, punctuation, arrows, box drawing,
// blocks, the geometric shapes before the emoji ones, braille, ✓ and ✗.
func narrow(r rune) bool {
	switch {
	case r >= 0x20 && r < 0x7f, r >= 0xa0 && r < 0x300, r >= 0x2010 && r < 0x2070, r >= 0x2190 && r < 0x2200,
		r >= 0x2500 && r < 0x25f8, r >= 0x2800 && r < 0x2900, r == 0x2713, r == 0x2717:
		return true
	}
	return false
}

// cellWidth is the display width of a styled line, like ansi.StringWidth, without its
// grapheme segmentation for the runes the console draws: the width of every line of every
// frame is measured, and this is most of a frame's time otherwise.
func cellWidth(s string) int {
	n := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c == 0x1b { // CSI: ESC [ parameters final byte
			if i+1 < len(s) && s[i+1] == '[' {
				j := i + 2
				for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
					j++
				}
				i = j + 1
				continue
			}
			return ansi.StringWidth(s)
		}
		if c < 0x80 {
			if c < 0x20 || c == 0x7f {
				return ansi.StringWidth(s)
			}
			n++
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if !narrow(r) {
			return ansi.StringWidth(s)
		}
		n++
		i += size
	}
	return n
}
