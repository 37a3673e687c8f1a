// docker buildx bake            builds the default target (unified)
// docker buildx bake all        builds every target
// docker buildx bake comfyui    builds one; TAG=v1.2.3 REGISTRY=ghcr.io/acme/machine docker buildx bake all
variable "REGISTRY" { default = "machine" }
variable "TAG" { default = "dev" }
variable "VERSION" { default = "dev" }
variable "GO_VERSION" { default = "1.26.7" }
variable "CUDA_VERSION" { default = "12-8" }
variable "COMFYUI_COMMIT" { default = "3fb07a804f1738b8f8c8b0d535eaccc72a9ddc7b" }
variable "P5_VERSION" { default = "2.3.4" }
variable "P5_SHA256" { default = "af29afdfa8c5d1096fb1335d6160f7b17be12d1eb21e69782f47c57c05893a48" }

group "default" {
  targets = ["unified"]
}

group "all" {
  targets = ["api", "base", "comfyui", "browser", "unified"]
}

target "_common" {
  context    = "."
  dockerfile = "Dockerfile"
  args = {
    VERSION        = VERSION
    GO_VERSION     = GO_VERSION
    CUDA_VERSION   = CUDA_VERSION
    COMFYUI_COMMIT = COMFYUI_COMMIT
    P5_VERSION     = P5_VERSION
    P5_SHA256      = P5_SHA256
  }
  platforms = ["linux/amd64"]
}

target "api" {
  inherits = ["_common"]
  target   = "api"
  tags     = ["${REGISTRY}:${TAG}-api"]
}

target "base" {
  inherits = ["_common"]
  target   = "base"
  tags     = ["${REGISTRY}:${TAG}-base"]
}

target "comfyui" {
  inherits = ["_common"]
  target   = "comfyui"
  tags     = ["${REGISTRY}:${TAG}-comfyui"]
}

target "browser" {
  inherits = ["_common"]
  target   = "browser"
  tags     = ["${REGISTRY}:${TAG}-browser"]
}

target "unified" {
  inherits = ["_common"]
  target   = "unified"
  tags     = ["${REGISTRY}:${TAG}", "${REGISTRY}:${TAG}-unified"]
}
