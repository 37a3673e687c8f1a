// Package termshot rebuilds a terminal screen from a program's output with the x/vt emulator,
// and draws it into a PNG with the Go Mono fonts: deterministic, and no browser or terminal
// needed, so it runs in CI.
package termshot

import (
	"image"
	"image/color"
	"image/draw"
	"strings"

	uv "github.com/charmbracelet/ultraviolet"
	"github.com/charmbracelet/x/vt"
	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gomono"
	"golang.org/x/image/font/gofont/gomonobold"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"
)

// Screen renders one frame (a view's content) into a fresh emulator of w×h cells.
func Screen(frame string, w, h int) *vt.Emulator {
	emu := vt.NewEmulator(w, h)
	_, _ = emu.WriteString(strings.ReplaceAll(frame, "\n", "\r\n"))
	return emu
}

var (
	background = color.RGBA{0x1e, 0x1e, 0x2e, 0xff}
	foreground = color.RGBA{0xdc, 0xdc, 0xdc, 0xff}
)

func face(ttf []byte) font.Face {
	f, err := opentype.Parse(ttf)
	if err != nil {
		panic(err) // the embedded fonts always parse
	}
	fc, err := opentype.NewFace(f, &opentype.FaceOptions{Size: 14, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		panic(err)
	}
	return fc
}

// PNG draws the emulator's cells: each cell's glyph in its foreground colour on its
// background, bold where the cell is bold.
func PNG(emu *vt.Emulator, w, h int) *image.RGBA {
	regular, bold := face(gomono.TTF), face(gomonobold.TTF)
	const cw, ch, base = 8, 17, 13
	img := image.NewRGBA(image.Rect(0, 0, w*cw+16, h*ch+16))
	draw.Draw(img, img.Bounds(), &image.Uniform{background}, image.Point{}, draw.Src)
	for y := range h {
		for x := range w {
			cell := emu.CellAt(x, y)
			if cell == nil {
				continue
			}
			fg, bg := color.Color(foreground), color.Color(nil)
			if cell.Style.Fg != nil {
				fg = cell.Style.Fg
			}
			if cell.Style.Bg != nil {
				bg = cell.Style.Bg
			}
			if cell.Style.Attrs&uv.AttrReverse != 0 {
				if bg == nil {
					bg = background
				}
				fg, bg = bg, fg
			}
			px, py := 8+x*cw, 8+y*ch
			if bg != nil {
				draw.Draw(img, image.Rect(px, py, px+cw*max(cell.Width, 1), py+ch), &image.Uniform{bg}, image.Point{}, draw.Src)
			}
			if cell.Content == "" || cell.Content == " " {
				continue
			}
			f := regular
			if cell.Style.Attrs&uv.AttrBold != 0 {
				f = bold
			}
			r := []rune(cell.Content)[0]
			if drawBlock(img, r, px, py, cw, ch, fg) {
				continue
			}
			text := cell.Content
			if _, ok := f.GlyphAdvance(r); !ok {
				text = fallback(r)
			}
			d := font.Drawer{Dst: img, Src: &image.Uniform{fg}, Face: f, Dot: fixed.P(px, py+base)}
			d.DrawString(text)
		}
	}
	return img
}

// drawBlock draws the block elements the console uses for bars and sparklines, which the Go
// fonts lack, as rectangles.
func drawBlock(img *image.RGBA, r rune, px, py, cw, ch int, fg color.Color) bool {
	switch {
	case r >= '▁' && r <= '█': // eighths, from the bottom
		h := ch * int(r-'▁'+1) / 8
		draw.Draw(img, image.Rect(px, py+ch-h, px+cw, py+ch), &image.Uniform{fg}, image.Point{}, draw.Src)
	case r > 0x2800 && r <= 0x28ff: // braille: 2×4 dots, bit i of r-0x2800 in the Unicode order
		dots := [8][2]int{{0, 0}, {0, 1}, {0, 2}, {1, 0}, {1, 1}, {1, 2}, {0, 3}, {1, 3}}
		dw, dh := max(1, cw/2-1), max(1, ch/4-1)
		for i, d := range dots {
			if (r-0x2800)&(1<<i) != 0 {
				x, y := px+d[0]*cw/2, py+d[1]*ch/4
				draw.Draw(img, image.Rect(x, y, x+dw, y+dh), &image.Uniform{fg}, image.Point{}, draw.Src)
			}
		}
	case r == '░':
		rr, gg, bb, _ := fg.RGBA()
		dim := color.RGBA{uint8(rr >> 9), uint8(gg >> 9), uint8(bb >> 9), 0xff}
		draw.Draw(img, image.Rect(px, py+2, px+cw, py+ch-2), &image.Uniform{dim}, image.Point{}, draw.Src)
	default:
		return false
	}
	return true
}

// fallback stands in for symbols the Go fonts lack.
func fallback(r rune) string {
	switch r {
	case '✓':
		return "+"
	case '✗':
		return "x"
	case '▸', '›':
		return ">"
	case '↻':
		return "@"
	case '○':
		return "o"
	case '·':
		return "."
	case '▏', '┤', '│':
		return "|"
	case '┄':
		return "-"
	}
	return "?"
}
