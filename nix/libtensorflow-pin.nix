# The libtensorflow the Nix build uses: the same PyPI wheels as scripts/setup-libtensorflow.sh,
# pinned by sha256 (nix/check-static.sh compares the CPU hash with that script's WHEEL_SHA256).
# Plain data: evaluable without nixpkgs. nix/libtensorflow.nix turns it into a package.
{
  version = "2.18.1";
  cpu = {
    pname = "tensorflow-cpu";
    url = "https://files.pythonhosted.org/packages/b5/e1/b84084c57092caae04b6f0e1e741d52193b87f870125e22800d0cd57f147/tensorflow_cpu-2.18.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
    # sha256 810c75d7149d2da0cb2092187817b0dcabb80728ca9f9cf3a61f3f42fadd1298
    hash = "sha256-gQx11xSdLaDLIJIYeBew3Ku4ByjKn5zzph8/QvrdEpg=";
  };
  # The CUDA build of the same release: the same C API, plus the CUDA kernels; it loads the CUDA
  # libraries listed in host/lib/src/dlopen.json with dlopen().
  cuda = {
    pname = "tensorflow";
    url = "https://files.pythonhosted.org/packages/45/c6/05d862ebeaaf63343dffc4f97dab62ac493e8c2bbc6b1a256199bcc78ed4/tensorflow-2.18.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
    # sha256 c9f87e5d2a680a4595f5dc30daf6bbaec9d4129b46d7ef1b2af63c46ac7d2828
    hash = "sha256-yfh+XSpoCkWV9dww2va7rsnUEptG1+8bKvY8Rqx9KCg=";
  };
}
