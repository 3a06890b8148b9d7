# The dlopen() manifest: libraries TensorFlow loads by name at run time and never lists as
# DT_NEEDED. It is the very file the non-Nix image builder reads (host/lib/src/closure.rs), so
# both images carry the same libraries. Plain data: nix/check-static.sh evaluates it without nixpkgs.
let
  manifest = builtins.fromJSON (builtins.readFile ../host/lib/src/dlopen.json);

  # Which nixpkgs package ships each soname: an attribute of cudaPackages_12 for the CUDA variant.
  # A soname added to dlopen.json must be added here too; evaluation fails until it is.
  providers = {
    cpu = { };
    cuda = {
      "libcudart.so.12" = "cuda_cudart";
      "libcublas.so.12" = "libcublas";
      "libcublasLt.so.12" = "libcublas";
      "libcufft.so.11" = "libcufft";
      "libcusparse.so.12" = "libcusparse";
      "libcusolver.so.11" = "libcusolver";
      "libcurand.so.10" = "libcurand";
      "libcudnn.so.9" = "cudnn";
      "libcudnn_graph.so.9" = "cudnn";
      "libcudnn_ops.so.9" = "cudnn";
      "libcudnn_cnn.so.9" = "cudnn";
      "libcudnn_adv.so.9" = "cudnn";
      "libcudnn_heuristic.so.9" = "cudnn";
      "libcudnn_engines_precompiled.so.9" = "cudnn";
      "libcudnn_engines_runtime_compiled.so.9" = "cudnn";
      "libnccl.so.2" = "nccl";
      "libnvJitLink.so.12" = "libnvjitlink";
    };
  };

  unmapped = variant: builtins.filter (soname: !(providers.${variant} ? ${soname})) manifest.${variant};

  # Sorted, without duplicates.
  packageNames =
    variant:
    builtins.attrNames (
      builtins.listToAttrs (
        map (soname: {
          name = providers.${variant}.${soname};
          value = null;
        }) manifest.${variant}
      )
    );

  checked =
    variant:
    if unmapped variant == [ ] then
      manifest.${variant}
    else
      throw "nix/dlopen.nix: no nixpkgs package named for ${builtins.concatStringsSep ", " (unmapped variant)} (host/lib/src/dlopen.json, \"${variant}\")";
in
{
  cpu = checked "cpu";
  cuda = checked "cuda";
  inherit providers;
  # The cudaPackages attributes whose libraries go on libtensorflow's RUNPATH (nix/libtensorflow.nix).
  cudaPackageNames = packageNames "cuda";
}
