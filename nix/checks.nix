# What `nix flake check` runs: clippy with warnings denied, rustfmt, the test suites through
# nextest, how the worker links, and the images: they run as 65534, hold no shell, hold exactly
# the worker's closure under /nix/store and nothing unlisted outside it, stream the same bytes
# every time; the CUDA one also holds every library of host/lib/src/dlopen.json on
# libtensorflow's RUNPATH, and /run/opengl-driver/lib.
{
  lib,
  pkgs,
  craneLib,
  src,
  workspace,
  images,
}:
let
  cfg = import ./image-config.nix;
  dlopen = import ./dlopen.nix;
  nextest = import ./nextest.nix;
  inherit (workspace) commonArgs cargoArtifacts;

  workerLinks =
    worker:
    pkgs.runCommand "${worker.name}-links-check"
      {
        nativeBuildInputs = [ pkgs.patchelf ];
        allowedNeeded = cfg.allowedNeeded;
        tensorflowLib = "${worker.libtensorflow}/lib";
        workerExe = lib.getExe worker;
      }
      ''
        set -euo pipefail
        fail() { echo "FAIL: $*" >&2; exit 1; }

        # Rust dependencies are static: DT_NEEDED names only libtensorflow and glibc/libgcc_s.
        for needed in $(patchelf --print-needed "$workerExe"); do
          case " $allowedNeeded " in
            *" $needed "*) echo "needed: $needed" ;;
            *) fail "unexpected DT_NEEDED $needed (only libtensorflow and glibc may be linked dynamically)" ;;
          esac
        done

        # libtensorflow is found through the worker's own RUNPATH...
        runpath=$(patchelf --print-rpath "$workerExe")
        echo "RUNPATH: $runpath"
        case ":$runpath:" in
          *":$tensorflowLib:"*) ;;
          *) fail "RUNPATH lacks $tensorflowLib" ;;
        esac

        # ...and every library resolves with an empty environment (no LD_LIBRARY_PATH).
        interpreter=$(patchelf --print-interpreter "$workerExe")
        listing=$(env -i "$interpreter" --list "$workerExe")
        echo "$listing"
        if grep -q 'not found' <<<"$listing"; then fail "unresolved libraries"; fi

        touch "$out"
      '';

  imageCheck =
    variant: image:
    let
      inherit (image) worker;
      libtensorflow = worker.libtensorflow;
    in
    pkgs.runCommand "tfsandbox-image-${variant}-check"
      {
        nativeBuildInputs = [
          pkgs.jq
          pkgs.patchelf
        ];
        closure = pkgs.closureInfo {
          rootPaths = [
            worker
            pkgs.dockerTools.fakeNss
          ];
        };
        passwd = "${pkgs.dockerTools.fakeNss}/etc/passwd";
        inherit (cfg) user shells;
        required = cfg.entries.${variant}.required;
        allowed = cfg.entries.${variant}.allowed;
        sonames = dlopen.${variant};
        driverPath = cfg.driverLink.path;
        driverTarget = cfg.driverLink.target;
        driverRunpath = cfg.driverLink.runpath;
        frameworkLib = "${libtensorflow}/lib/libtensorflow_framework.so.2";
        workerExe = lib.getExe worker;
        isCuda = lib.boolToString (variant == "cuda");
      }
      ''
        set -euo pipefail
        fail() { echo "FAIL: $*" >&2; exit 1; }

        # Reproducible: streaming the image twice gives the same bytes.
        first=$(${image} | sha256sum)
        second=$(${image} | sha256sum)
        [ "$first" = "$second" ] || fail "two streams of the image differ"
        echo "image sha256: $first"

        mkdir img
        ${image} | tar -C img -xf -
        config="img/$(jq -r '.[0].Config' img/manifest.json)"

        # Runs as 65534, which the image's /etc/passwd calls nobody; started as the worker itself,
        # with no environment (so no LD_LIBRARY_PATH).
        jq -e --arg user "$user" '.config.User == $user' "$config" >/dev/null \
          || fail "User is $(jq -c .config.User "$config"), not $user"
        jq -e --arg exe "$workerExe" '.config.Entrypoint == [$exe]' "$config" >/dev/null \
          || fail "Entrypoint is $(jq -c .config.Entrypoint "$config")"
        jq -e '(.config.Env // []) | length == 0' "$config" >/dev/null \
          || fail "Env is set: $(jq -c .config.Env "$config")"
        grep -q '^nobody:x:65534:65534:' "$passwd" || fail "$passwd has no nobody with 65534"

        # Every entry of every layer, as a path without leading ./ or /.
        for layer in $(jq -r '.[0].Layers[]' img/manifest.json); do
          tar -tvf "img/$layer"
        done > listing
        for layer in $(jq -r '.[0].Layers[]' img/manifest.json); do
          tar -tf "img/$layer"
        done | sed -e 's|^\./||' -e 's|^/||' -e 's|/$||' | grep -v -x -e "" -e "." | sort -u > names
        echo "$(wc -l < names) entries"

        # Under /nix/store: exactly the closure of the worker (and of fakeNss's files).
        { grep '^nix/store/' names || true; } | cut -d/ -f1-3 | sort -u > store-paths
        sed 's|^/||' "$closure/store-paths" | sort -u > expected-store-paths
        diff -u expected-store-paths store-paths || fail "the image's store paths are not the worker's closure"
        echo "store paths: $(wc -l < store-paths), the closure exactly"

        # Outside it: all of `required`, nothing beyond `allowed` (nix/image-config.nix).
        { grep -v -x -e 'nix' -e 'nix/store' names | grep -v '^nix/store/' || true; } > outside
        for entry in $required; do
          grep -q -x -F "$entry" outside || fail "/$entry is missing"
        done
        while read -r entry; do
          case " $allowed " in
            *" $entry "*) ;;
            *) fail "/$entry is not in nix/image-config.nix's list" ;;
          esac
        done < outside
        echo "outside the store: $(tr '\n' ' ' < outside)"

        # No shell, under any name, anywhere.
        while read -r entry; do
          case " $shells " in
            *" ''${entry##*/} "*) fail "a shell in the image: /$entry" ;;
          esac
        done < names

        if [ "$isCuda" = true ]; then
          # Every dlopen() library of the manifest lies in a folder on libtensorflow's RUNPATH.
          runpath=$(patchelf --print-rpath "$frameworkLib")
          IFS=: read -r -a folders <<<"$runpath"
          for soname in $sonames; do
            found=
            for folder in "''${folders[@]}"; do
              if grep -q -x -F "''${folder#/}/$soname" names; then found=$folder; break; fi
            done
            [ -n "$found" ] || fail "$soname (host/lib/src/dlopen.json) is not in the image on libtensorflow's RUNPATH"
            echo "$soname: $found"
          done
          # The driver's libraries: looked for in /run/opengl-driver/lib, which is /usr/lib64,
          # where the NVIDIA container toolkit puts them.
          case ":$runpath:" in
            *":$driverRunpath:"*) ;;
            *) fail "libtensorflow's RUNPATH lacks $driverRunpath" ;;
          esac
          grep -q -E "(^| )(\./)?$driverPath -> $driverTarget\$" listing \
            || fail "/$driverPath is not a link to $driverTarget"
        fi

        touch "$out"
      '';
in
{
  clippy = craneLib.cargoClippy (
    commonArgs
    // {
      inherit cargoArtifacts;
      cargoClippyExtraArgs = "--workspace --all-targets -- --deny warnings";
    }
  );

  fmt = craneLib.cargoFmt {
    inherit src;
    inherit (commonArgs) pname version;
    cargoExtraArgs = "--all";
  };

  nextest = craneLib.cargoNextest (
    commonArgs
    // {
      inherit cargoArtifacts;
      # The suites start the real binaries from target/release, as scripts/test.sh builds them
      # first.
      buildPhaseCargoCommand = ''
        mkdir -p $out
        cargo build --profile release --locked --workspace --bins
        cargo nextest --version
      '';
      # Left out, and why, and the environment: nix/nextest.nix.
      inherit (nextest.environment) TFSANDBOX_ALLOW_WEAKER;
      cargoNextestExtraArgs = "--workspace --no-fail-fast -E ${lib.escapeShellArg nextest.expression}";
    }
  );

  worker-links = workerLinks images.cpu.worker;
  image = imageCheck "cpu" images.cpu;
  image-cuda = imageCheck "cuda" images.cuda;
}
