//! Deployment checks: the Kubernetes overlays render and pass schema validation, and the
//! manifests, the compose files and the Dockerfiles agree with the code they deploy
//! (ports, probes, endpoints, environment variables, model ids, features).
//!
//! "The code" is read from the code itself: each binary's `--help` (every option lists its
//! `MMC_*` variable and default) and the built-in model manifest. Tools (kubectl with
//! kustomize, kubernetes-validate, hadolint, PyYAML) come from `deploy/test-tools.sh`,
//! which `deploy/setup.sh --test` runs. Nothing here needs a container engine or a
//! cluster; what that leaves unchecked is listed in docs/deploy.md.

mod code;
mod containers;
mod kubernetes;
mod tools;
