package layer_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/installers/layer"
)

func TestParse(t *testing.T) {
	got, err := layer.Parse(" comfyui,browser , p5")
	if err != nil || !slices.Equal(got, []layer.Name{layer.ComfyUI, layer.Browser, layer.P5}) {
		t.Fatalf("Parse = %v, %v", got, err)
	}
	for in, want := range map[string]string{"cuda": `unknown layer "cuda"; the layers are comfyui, browser, p5`, " , ": "names no layer"} {
		if _, err := layer.Parse(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want %q", in, err, want)
		}
	}
}
