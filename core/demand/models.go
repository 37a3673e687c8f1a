package demand

import (
	"bytes"
	"encoding/json"
	"strings"
)

// Limits on what is read from an untrusted job. A job past them is still counted for its
// service; only its models are not (or only those found before the limit).
const (
	MaxPayloadBytes = 4 << 20 // larger payloads (inline images) are not parsed for models
	MaxDepth        = 32      // nesting deeper than this is skipped
	MaxModelsPerJob = 32
	MaxNameLen      = 256
	maxTokens       = 200_000
)

// loaderInputs are the ComfyUI node inputs that name a model file (the loaders of the core
// nodes and the common custom ones). Their values are plain strings; links between nodes are
// arrays and are ignored.
var loaderInputs = map[string]bool{
	"ckpt_name": true, "lora_name": true, "vae_name": true, "unet_name": true, "clip_name": true,
	"clip_name1": true, "clip_name2": true, "clip_name3": true, "control_net_name": true,
	"upscale_model_name": true, "style_model_name": true, "gligen_name": true, "model_name": true,
	"ipadapter_file": true, "clip_vision_name": true, "hypernetwork_name": true,
}

// Models returns the model names a job references: ComfyUI loader inputs anywhere in the
// payload, the payload's top-level "model" (API jobs such as openai or replicate), and
// requirements.models (a string or an array of strings). Names are deduplicated in order of
// appearance. Malformed or oversize input yields what was found before the problem.
func Models(payload, requirements []byte) []string {
	c := collector{seen: map[string]bool{}}
	c.walk(payload, true)
	c.requirements(requirements)
	return c.out
}

type collector struct {
	out  []string
	seen map[string]bool
}

func (c *collector) add(name string) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > MaxNameLen || c.seen[name] || len(c.out) >= MaxModelsPerJob {
		return
	}
	if strings.ContainsAny(name, "\x00\n\r") {
		return
	}
	c.seen[name] = true
	c.out = append(c.out, name)
}

// walk streams doc token by token, so depth and size are bounded without building the tree.
func (c *collector) walk(doc []byte, apiModel bool) {
	if len(doc) == 0 || len(doc) > MaxPayloadBytes {
		return
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	// stack holds, per open container, whether it is an object and the key awaiting its value.
	type frame struct {
		object bool
		key    string
		isKey  bool // the next string token in this object is a key
	}
	var stack []frame
	for n := 0; n < maxTokens; n++ {
		tok, err := dec.Token()
		if err != nil { // io.EOF or malformed JSON: keep what was found
			return
		}
		var top *frame
		if len(stack) > 0 {
			top = &stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if len(stack) >= MaxDepth {
					return
				}
				if top != nil && top.object {
					top.isKey = true
				}
				stack = append(stack, frame{object: v == '{', isKey: v == '{'})
			case '}', ']':
				stack = stack[:len(stack)-1]
			}
		case string:
			if top != nil && top.object && top.isKey {
				top.key, top.isKey = v, false
				continue
			}
			if top != nil && top.object {
				if loaderInputs[top.key] || (apiModel && len(stack) == 1 && top.key == "model") {
					c.add(v)
				}
				top.isKey = true
			}
		default:
			if top != nil && top.object {
				top.isKey = true
			}
		}
	}
}

func (c *collector) requirements(doc []byte) {
	if len(doc) == 0 || len(doc) > MaxPayloadBytes {
		return
	}
	var r struct {
		Models json.RawMessage `json:"models"`
	}
	if json.Unmarshal(doc, &r) != nil || len(r.Models) == 0 {
		return
	}
	var one string
	if json.Unmarshal(r.Models, &one) == nil {
		c.add(one)
		return
	}
	var many []json.RawMessage
	if json.Unmarshal(r.Models, &many) != nil {
		return
	}
	for i, m := range many {
		if i >= MaxModelsPerJob {
			return
		}
		if json.Unmarshal(m, &one) == nil {
			c.add(one)
		}
	}
}
