# What can be checked of the Nix build without nixpkgs (nix/check-static.sh runs this with
# `nix-instantiate --eval --strict`): the lock against flake.nix, the image settings, the dlopen()
# manifest shared with the non-Nix image builder, the libtensorflow pin, the nextest filter.
# Any failed check throws; otherwise the result summarises what was checked.
let
  inherit (builtins)
    all
    attrNames
    elem
    elemAt
    filter
    isInt
    isString
    length
    match
    ;

  check = condition: message: if condition then true else throw "nix/tests/static.nix: ${message}";
  matches = regex: string: isString string && match regex string != null;

  flake = import ../../flake.nix;
  lock = builtins.fromJSON (builtins.readFile ../../flake.lock);
  manifest = builtins.fromJSON (builtins.readFile ../../host/lib/src/dlopen.json);
  cfg = import ../image-config.nix;
  dlopen = import ../dlopen.nix;
  pin = import ../libtensorflow-pin.nix;
  nextest = import ../nextest.nix;

  # Annotated tags of the inputs, read from their repositories: a lock's rev is the commit a tag
  # points to (what `nix flake lock` writes), never the tag object itself. Only these can be told
  # apart offline; a new tag pinned in flake.nix belongs here too.
  annotatedTags = {
    "ipetkov/crane/v0.23.4" = {
      tagObject = "498d7e7b9b708d584cbc71ec083527f68114f9a3";
      commit = "10e6e3cb966f7cfcc789fe5eee7a85f3188ce08b";
    };
  };

  # flake.lock: version 7, every input of flake.nix locked at a revision with its narHash, and
  # locked from exactly the reference flake.nix names.
  rootInputs = lock.nodes.${lock.root}.inputs;
  inputNames = attrNames flake.inputs;
  githubUrl =
    name:
    let
      m = match "github:([^/]+)/([^/]+)/([^/?]+)" flake.inputs.${name}.url;
    in
    if m == null then
      throw "nix/tests/static.nix: input ${name}: expected a github:owner/repo/ref url"
    else
      {
        owner = elemAt m 0;
        repo = elemAt m 1;
        ref = elemAt m 2;
      };
  checkInput =
    name:
    let
      nodeName = rootInputs.${name};
      node = lock.nodes.${nodeName};
      url = githubUrl name;
      locked = node.locked;
    in
    check (isString nodeName) "input ${name} is a follows, not locked"
    && check (
      node.original == url // { type = "github"; }
    ) "input ${name}: flake.lock's original ${builtins.toJSON node.original} is not flake.nix's ${flake.inputs.${name}.url}"
    && check (locked.type == "github" && locked.owner == url.owner && locked.repo == url.repo) "input ${name}: locked elsewhere than it was asked for"
    && check (matches "[0-9a-f]{40}" locked.rev) "input ${name}: no full rev"
    && check (
      let
        tag = annotatedTags."${url.owner}/${url.repo}/${url.ref}" or null;
      in
      tag == null || locked.rev == tag.commit
    ) "input ${name}: rev ${locked.rev} is not the commit that ${url.ref} points to (${
      (annotatedTags."${url.owner}/${url.repo}/${url.ref}" or { commit = "?"; }).commit
    }); an annotated tag's own object is not a commit"
    && check (matches "sha256-[A-Za-z0-9+/]{43}=" locked.narHash) "input ${name}: no sha256 narHash"
    && check (isInt locked.lastModified && locked.lastModified > 0) "input ${name}: no lastModified";
  lockOk =
    check (lock.version == 7) "flake.lock version is not 7"
    && check (attrNames rootInputs == inputNames) "flake.lock's root inputs ${builtins.toJSON (attrNames rootInputs)} are not flake.nix's ${builtins.toJSON inputNames}"
    && all checkInput inputNames
    # Inputs follow each other where they can: one nixpkgs in the whole lock.
    && check (
      length (filter (n: (lock.nodes.${n}.locked.repo or null) == "nixpkgs") (attrNames lock.nodes)) == 1
    ) "more than one nixpkgs in flake.lock"
    # Every node is one that root names (nothing dangling from an older lock).
    && check (
      attrNames lock.nodes == builtins.sort builtins.lessThan ([ lock.root ] ++ map (n: rootInputs.${n}) inputNames)
    ) "flake.lock holds nodes no input uses";

  # The dlopen() manifest: the same file the non-Nix builder reads, every soname mapped.
  dlopenOk =
    check (dlopen.cpu == manifest.cpu && dlopen.cuda == manifest.cuda) "nix/dlopen.nix does not give host/lib/src/dlopen.json's lists"
    && check (manifest.cuda != [ ]) "the CUDA manifest is empty"
    && check (all (s: matches "lib[A-Za-z0-9_]+\\.so\\.[0-9]+" s) manifest.cuda) "a manifest entry is not a soname"
    && check (dlopen.cudaPackageNames != [ ]) "no CUDA packages named";

  # The image config: user 65534, the worker as entry point, no environment at all.
  exampleWorker = "/nix/store/00000000000000000000000000000000-tfsandbox-worker-0.1.0/bin/tfsandbox-worker";
  config = cfg.config {
    workerExe = exampleWorker;
    variant = "cuda";
  };
  imageOk =
    check (cfg.user == "65534:65534") "image user is not 65534:65534"
    && check (config.User == cfg.user) "the config's User is not nix/image-config.nix's user"
    && check (config.Entrypoint == [ exampleWorker ]) "the entry point is not the worker alone"
    && check (!(config ? Env) && !(config ? Cmd)) "the config sets Env or Cmd"
    && check (cfg.driverLink.runpath == "/" + cfg.driverLink.path) "driverLink's runpath and path differ"
    && check (elem cfg.driverLink.path cfg.entries.cuda.required) "the CUDA image does not require the driver link"
    && all (
      variant:
      check (all (e: elem e cfg.entries.${variant}.allowed) cfg.entries.${variant}.required) "${variant}: a required entry is not allowed"
      && check (all (d: elem d.path cfg.entries.${variant}.required) cfg.emptyDirs) "${variant}: an empty folder is not required"
      && check (!(elem "bin/sh" cfg.entries.${variant}.allowed)) "${variant}: /bin/sh allowed"
    ) [ "cpu" "cuda" ]
    && check (all (s: elem s cfg.shells) [ "sh" "bash" "busybox" ]) "the shell list misses sh, bash or busybox"
    && check (all (n: !(matches "lib(ssl|crypto|z|curl)\\..*" n)) cfg.allowedNeeded) "a non-glibc library may be linked dynamically";

  # The libtensorflow pin: one TensorFlow release, both wheels from PyPI, pinned by SRI hashes.
  wheelOk =
    variant:
    let
      w = pin.${variant};
      file = "${builtins.replaceStrings [ "-" ] [ "_" ] w.pname}-${pin.version}-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
    in
    check (matches "https://files\\.pythonhosted\\.org/packages/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{60}/.*" w.url) "${variant} wheel: not a files.pythonhosted.org url"
    && check (baseNameOf w.url == file) "${variant} wheel: file is ${baseNameOf w.url}, expected ${file}"
    && check (matches "sha256-[A-Za-z0-9+/]{43}=" w.hash) "${variant} wheel: no sha256 SRI hash";
  pinOk =
    check (matches "2\\.(1[3-9]|[2-9][0-9])\\.[0-9]+" pin.version) "TensorFlow ${pin.version} is older than 2.13 (the fixtures use DisableCopyOnRead)"
    && wheelOk "cpu"
    && wheelOk "cuda"
    && check (pin.cpu.hash != pin.cuda.hash) "both wheels have one hash";

  nextestOk =
    check (matches "not \\(.*\\)" nextest.expression) "the nextest filter does not exclude"
    && check (all (e: isString e.why && e.why != "") nextest.excluded) "an exclusion without a reason";
in
assert lockOk && dlopenOk && imageOk && pinOk && nextestOk;
{
  inputs = builtins.listToAttrs (
    map (name: {
      inherit name;
      value =
        let
          node = lock.nodes.${rootInputs.${name}};
        in
        "${node.original.owner}/${node.original.repo}/${node.original.ref} = ${node.locked.rev} ${node.locked.narHash}";
    }) inputNames
  );
  imageUser = cfg.user;
  cudaDlopen = "${toString (length manifest.cuda)} sonames from ${toString (length dlopen.cudaPackageNames)} cudaPackages_12 packages";
  libtensorflow = "${pin.version} (${pin.cpu.pname} / ${pin.cuda.pname} wheels)";
  nextestFilter = nextest.expression;
}
