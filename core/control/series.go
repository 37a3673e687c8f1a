package control

import (
	"bytes"
	"fmt"
	"strconv"
)

// Series is a history ring on the wire, oldest first. It is a JSON array of numbers like any
// []float64, but decodes without reflection: a console decodes every history of every snapshot
// (at 8 GPUs with 5 minutes of history, most of a 67 KB snapshot), and this halves that cost.
type Series []float64

// UnmarshalJSON implements json.Unmarshaler.
func (s *Series) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*s = nil
		return nil
	}
	if len(b) < 2 || b[0] != '[' || b[len(b)-1] != ']' {
		return fmt.Errorf("a history must be an array of numbers, not %.20q", b)
	}
	b = bytes.TrimSpace(b[1 : len(b)-1])
	out := make(Series, 0, bytes.Count(b, []byte{','})+1)
	for len(b) > 0 {
		tok := b
		if i := bytes.IndexByte(b, ','); i >= 0 {
			tok, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		v, err := strconv.ParseFloat(string(bytes.TrimSpace(tok)), 64)
		if err != nil {
			return fmt.Errorf("a history must be an array of numbers: %w", err)
		}
		out = append(out, v)
	}
	*s = out
	return nil
}
