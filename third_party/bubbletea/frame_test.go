package tea

import (
	"testing"
	"time"
)

// The patch's pacing (PATCH.md): a view is drawn at once when the last frame is at least one
// interval old; one that comes sooner arms the frame loop's timer once, and nothing is drawn
// while the renderer is stopped.
func TestFramePacing(t *testing.T) {
	p := NewProgram(nil)
	p.framerate = time.Hour // the second frame is always "too soon"

	if p.frameDue() {
		t.Fatal("a frame was due before the renderer started")
	}
	p.frameOn = true
	if !p.frameDue() {
		t.Fatal("the first frame after a long quiet was not drawn at once")
	}
	if p.frameDue() {
		t.Fatal("a second frame within the interval was drawn at once")
	}
	if !p.frameArmed || len(p.wake) != 1 {
		t.Fatalf("a frame within the interval did not arm the timer: armed %v, wake-ups %d", p.frameArmed, len(p.wake))
	}
	if p.frameDue() || len(p.wake) != 1 {
		t.Fatalf("an armed timer was armed again: wake-ups %d", len(p.wake))
	}
	p.frameArmed, p.lastFrame = false, time.Time{} // the timer drew; a long quiet follows
	if !p.frameDue() {
		t.Fatal("a frame after the timer drew and a long quiet was not drawn at once")
	}
}
