package openai_test

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/internal/fakeopenai"
)

// openai_img2img sends the prompt and every reference image to the images edit endpoint as a
// multipart form, and stores the edited image as an asset.
func TestImg2ImgEditsThroughTheEditEndpoint(t *testing.T) {
	fake, c, dir := setup(t)
	png := base64.StdEncoding.EncodeToString(fakeopenai.PNG)
	res, err := runJob(c, "openai_img2img", `{"text":"make it blue","model":"gpt-image-1","images":["data:image/jpeg;base64,`+png+`","`+png+`"]}`, "")
	if err != nil {
		t.Fatal(err)
	}
	if u := res.Data.(map[string]any)["image_url"]; u != "https://cdn.example.com/assets/job-7.png" {
		t.Errorf("image_url = %v", u)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "job-7.png")); string(b) != string(fakeopenai.PNG) {
		t.Errorf("asset = %q", b)
	}
	if len(fake.Edits) != 1 || fake.Edits[0].Prompt != "make it blue" || strings.Join(fake.Edits[0].Images, ",") != "image/jpeg,image/png" {
		t.Errorf("edits = %+v", fake.Edits)
	}
}

// Bad input fails for good, with a sentence naming what is wrong; URLs are not fetched.
func TestImg2ImgRefusesBadInput(t *testing.T) {
	fake, c, _ := setup(t)
	for payload, want := range map[string]string{
		`{"images":["aGk="]}`: "neither prompt nor text",
		`{"prompt":"x"}`:      "no images",
		`{"prompt":"x","images":["http://169.254.169.254/"]}`:    "not fetched",
		`{"prompt":"x","images":["data:text/html;base64,aGk="]}`: "data URL",
		`{"prompt":"x","images":["%%%"]}`:                        "base64",
	} {
		_, err := runJob(c, "openai_img2img", payload, "")
		if !job.IsPermanent(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a permanent error about %q", payload, err, want)
		}
	}
	if len(fake.Edits) != 0 {
		t.Errorf("bad jobs reached the API: %+v", fake.Edits)
	}
}
