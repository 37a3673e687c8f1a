package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// sanitizeBase64 removes base64 data from a JSON document before it goes into an attestation,
// as emp's worker does (sanitizeBase64Data, packages/core/src/utils/base64-sanitizer.ts), so
// attestations never hold customers' images: image_base64 strings become
// "[BASE64_IMAGE_REMOVED]", runs of 100+ base64 characters in other strings of objects
// "[BASE64_DATA_REMOVED]", and strings that hold JSON are sanitized inside and re-encoded.
// Members keep their order. Strings directly inside arrays are left alone, as emp leaves them.
func sanitizeBase64(doc []byte) ([]byte, error) {
	n, err := parseJSON(doc)
	if err != nil {
		return nil, fmt.Errorf("sanitize: %w", err)
	}
	scrub(n)
	return n.encode(), nil
}

var base64Run = regexp.MustCompile(`[A-Za-z0-9+/]{100,}={0,2}`)

func scrub(n *node) {
	switch n.kind {
	case kindArray:
		for _, item := range n.items {
			scrub(item)
		}
	case kindObject:
		for i, key := range n.keys {
			v := n.vals[i]
			switch {
			case v.kind != kindString:
				scrub(v)
			case key == "image_base64":
				v.str = "[BASE64_IMAGE_REMOVED]"
			case key == "raw_output":
				v.str = base64Run.ReplaceAllString(v.str, "[BASE64_DATA_REMOVED]")
			case looksLikeJSON(v.str):
				if inner, err := parseJSON([]byte(v.str)); err == nil {
					scrub(inner)
					v.str = string(inner.encode())
				} else {
					v.str = base64Run.ReplaceAllString(v.str, "[BASE64_DATA_REMOVED]")
				}
			default:
				v.str = base64Run.ReplaceAllString(v.str, "[BASE64_DATA_REMOVED]")
			}
		}
	}
}

func looksLikeJSON(s string) bool {
	t := strings.TrimSpace(s)
	return len(t) >= 2 && ((t[0] == '{' && t[len(t)-1] == '}') || (t[0] == '[' && t[len(t)-1] == ']'))
}

type kind uint8

const (
	kindScalar kind = iota // number, true, false, null: kept as written
	kindString
	kindArray
	kindObject
)

// node is a JSON value that keeps the order of an object's members.
type node struct {
	kind  kind
	raw   string // kindScalar
	str   string // kindString
	items []*node
	keys  []string
	vals  []*node
}

func parseJSON(doc []byte) (*node, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	n, err := parseValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the JSON value")
	}
	return n, nil
}

func parseValue(dec *json.Decoder) (*node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			n := &node{kind: kindArray}
			for dec.More() {
				item, err := parseValue(dec)
				if err != nil {
					return nil, err
				}
				n.items = append(n.items, item)
			}
			_, err := dec.Token() // ]
			return n, err
		}
		n := &node{kind: kindObject}
		for dec.More() {
			key, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := parseValue(dec)
			if err != nil {
				return nil, err
			}
			n.keys, n.vals = append(n.keys, key.(string)), append(n.vals, v)
		}
		_, err := dec.Token() // }
		return n, err
	case string:
		return &node{kind: kindString, str: t}, nil
	case json.Number:
		return &node{kind: kindScalar, raw: t.String()}, nil
	case bool:
		if t {
			return &node{kind: kindScalar, raw: "true"}, nil
		}
		return &node{kind: kindScalar, raw: "false"}, nil
	default:
		return &node{kind: kindScalar, raw: "null"}, nil
	}
}

// encode writes the value compactly, as JSON.stringify does (no HTML escaping).
func (n *node) encode() []byte {
	var b bytes.Buffer
	n.write(&b)
	return b.Bytes()
}

func (n *node) write(b *bytes.Buffer) {
	switch n.kind {
	case kindScalar:
		b.WriteString(n.raw)
	case kindString:
		writeString(b, n.str)
	case kindArray:
		b.WriteByte('[')
		for i, item := range n.items {
			if i > 0 {
				b.WriteByte(',')
			}
			item.write(b)
		}
		b.WriteByte(']')
	case kindObject:
		b.WriteByte('{')
		for i, key := range n.keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(b, key)
			b.WriteByte(':')
			n.vals[i].write(b)
		}
		b.WriteByte('}')
	}
}

func writeString(b *bytes.Buffer, s string) {
	var tmp bytes.Buffer
	enc := json.NewEncoder(&tmp)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	b.Write(bytes.TrimSuffix(tmp.Bytes(), []byte("\n")))
}
