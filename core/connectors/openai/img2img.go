package openai

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/job"
)

// img2imgPayload is emp's openai_img2img payload: a prompt (or text) and the reference images,
// each a data URL or bare base64.
type img2imgPayload struct {
	Prompt  string   `json:"prompt"`
	Text    string   `json:"text"`
	Images  []string `json:"images"`
	Model   string   `json:"model"`
	Size    string   `json:"size"`
	Quality string   `json:"quality"`
}

// maxEditImages is what the images edit endpoint takes at most.
const maxEditImages = 16

// img2img edits images through the images edit endpoint (multipart: the prompt and each image
// as an image[] part) and stores the result as an asset.
func (c *Connector) img2img(ctx context.Context, j *job.Job) (map[string]any, map[string]any, error) {
	var p img2imgPayload
	if err := connectors.DecodePayload(j, &p); err != nil {
		return nil, nil, err
	}
	prompt := p.Prompt
	if prompt == "" {
		prompt = p.Text
	}
	switch {
	case prompt == "":
		return nil, nil, job.Permanent(fmt.Errorf("openai_img2img job %s has neither prompt nor text", j.ID))
	case len(p.Images) == 0:
		return nil, nil, job.Permanent(fmt.Errorf("openai_img2img job %s has no images; send \"images\": [data URLs or base64]", j.ID))
	case len(p.Images) > maxEditImages:
		return nil, nil, job.Permanent(fmt.Errorf("openai_img2img job %s has %d images; the edit endpoint takes at most %d", j.ID, len(p.Images), maxEditImages))
	}
	images := make([]editImage, len(p.Images))
	for i, in := range p.Images {
		img, err := decodeImage(in)
		if err != nil {
			return nil, nil, job.Permanent(fmt.Errorf("openai_img2img job %s, image %d: %w", j.ID, i+1, err))
		}
		images[i] = img
	}
	model := p.Model
	if model == "" {
		model = c.s.ImageModel
	}
	fields := map[string]string{"model": model, "prompt": prompt, "n": "1"}
	if p.Size != "" {
		fields["size"] = p.Size
	}
	if p.Quality != "" {
		fields["quality"] = p.Quality
	}
	body, contentType, err := multipartBody(fields, images)
	if err != nil {
		return nil, nil, err
	}
	_, resp, err := c.client.Do(ctx, func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.s.BaseURL+"/images/edits", bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+c.s.APIKey)
		req.Header.Set("Content-Type", contentType)
		return req, nil
	})
	if err != nil {
		return nil, nil, err
	}
	var out struct {
		Data []struct {
			B64 string `json:"b64_json"`
		} `json:"data"`
		Usage map[string]any `json:"usage"` // gpt-image-1 reports tokens
	}
	if err := json.Unmarshal(resp, &out); err != nil {
		return nil, nil, fmt.Errorf("OpenAI answered the image edit with malformed JSON (%v)", err)
	}
	if len(out.Data) == 0 || out.Data[0].B64 == "" {
		return nil, nil, fmt.Errorf("OpenAI returned no edited image")
	}
	saved, err := c.savePNG(ctx, j, out.Data[0].B64, "edited image")
	if err != nil {
		return nil, nil, err
	}
	return map[string]any{"image_url": saved.URL, "mime_type": saved.MimeType, "content_type": "image", "model": model,
		"size_bytes": saved.Size, "reference_images": len(images)}, out.Usage, nil
}

// editImage is one decoded reference image.
type editImage struct {
	mime string
	data []byte
}

// decodeImage reads a data URL (data:image/png;base64,…) or bare base64. URLs are not fetched:
// a job's URLs may point anywhere, the machine's own network included.
func decodeImage(s string) (editImage, error) {
	mime := "image/png"
	if rest, ok := strings.CutPrefix(s, "data:"); ok {
		meta, b64, found := strings.Cut(rest, ",")
		if !found || !strings.HasSuffix(meta, ";base64") || !strings.HasPrefix(meta, "image/") {
			return editImage{}, fmt.Errorf("a data URL must look like data:image/png;base64,…")
		}
		mime, s = strings.TrimSuffix(meta, ";base64"), b64
	} else if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		return editImage{}, fmt.Errorf("image URLs are not fetched by this machine; send the image as a data URL or base64")
	}
	data, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(data) == 0 {
		return editImage{}, fmt.Errorf("not valid base64 image data")
	}
	switch mime {
	case "image/png", "image/jpeg", "image/webp":
	default:
		return editImage{}, fmt.Errorf("type %s is not one the edit endpoint takes (png, jpeg, webp)", mime)
	}
	return editImage{mime: mime, data: data}, nil
}

// multipartBody encodes the form fields and the images as image[] parts.
func multipartBody(fields map[string]string, images []editImage) ([]byte, string, error) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, k := range []string{"model", "prompt", "n", "size", "quality"} {
		if v, ok := fields[k]; ok {
			if err := w.WriteField(k, v); err != nil {
				return nil, "", err
			}
		}
	}
	for i, img := range images {
		h := textproto.MIMEHeader{}
		ext := strings.TrimPrefix(img.mime, "image/")
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="image[]"; filename="image-%d.%s"`, i+1, ext))
		h.Set("Content-Type", img.mime)
		part, err := w.CreatePart(h)
		if err != nil {
			return nil, "", err
		}
		if _, err := part.Write(img.data); err != nil {
			return nil, "", err
		}
	}
	if err := w.Close(); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), w.FormDataContentType(), nil
}
