# libtensorflow for the Nix build: the C API out of the PyPI wheel pinned in
# nix/libtensorflow-pin.nix (the very bytes scripts/setup-libtensorflow.sh uses), with RUNPATHs
# pointed into the Nix store: nixpkgs' glibc and libstdc++, and for CUDA the nixpkgs CUDA
# libraries named by host/lib/src/dlopen.json plus /run/opengl-driver/lib for the driver.
#
# Not nixpkgs' own `libtensorflow` (python3.pkgs.tensorflow-build.libtensorflow): a multi-hour
# bazel source build of TensorFlow 2.13.0 in the nixpkgs expressions of 2024-2025 (marked broken
# in late 2025), older than the 2.18.1 the non-Nix build and the fixtures use, and its
# tensorflow.pc has no `libdir` for worker/build.rs to read.
{
  lib,
  stdenv,
  fetchurl,
  unzip,
  addDriverRunpath,
  cudaSupport ? false,
  cudaPackages ? { },
}:
let
  pin = import ./libtensorflow-pin.nix;
  dlopen = import ./dlopen.nix;
  wheel = if cudaSupport then pin.cuda else pin.cpu;

  cudaLibraries = lib.optionals cudaSupport (
    map (name: lib.getLib cudaPackages.${name}) dlopen.cudaPackageNames
  );

  # Searched in this order for DT_NEEDED entries and for TensorFlow's dlopen() calls (glibc uses
  # the calling library's RUNPATH for dlopen, and TensorFlow's loader lives in these libraries).
  runpath = lib.concatStringsSep ":" (
    [
      "${placeholder "out"}/lib"
      "${lib.getLib stdenv.cc.cc}/lib" # libstdc++.so.6, libgcc_s.so.1
      "${lib.getLib stdenv.cc.libc}/lib" # libc.so.6, libm.so.6, ...
    ]
    ++ map (p: "${p}/lib") cudaLibraries
    ++ lib.optionals cudaSupport [ "${addDriverRunpath.driverLink}/lib" ]
  );
in
stdenv.mkDerivation {
  pname = if cudaSupport then "libtensorflow-cuda" else "libtensorflow";
  inherit (pin) version;

  src = fetchurl { inherit (wheel) url hash; };

  # Headers and tensorflow.pc in `dev`, so the worker's closure (and so the image) holds only the
  # two libraries.
  outputs = [
    "out"
    "dev"
  ];

  nativeBuildInputs = [ unzip ];

  unpackPhase = ''
    runHook preUnpack
    unzip -q "$src" \
      'tensorflow/libtensorflow_cc.so.2' \
      'tensorflow/libtensorflow_framework.so.2' \
      'tensorflow/include/tensorflow/c/*'
    runHook postUnpack
  '';

  dontConfigure = true;
  dontBuild = true;
  # The libraries stay byte for byte what the wheel holds, but for their RUNPATH.
  dontStrip = true;
  dontPatchELF = true;

  installPhase = ''
    runHook preInstall
    install -Dm755 -t "$out/lib" \
      tensorflow/libtensorflow_cc.so.2 tensorflow/libtensorflow_framework.so.2
    # tensorflow-sys links `-ltensorflow`; in this wheel the C API lives in libtensorflow_cc.
    ln -s libtensorflow_cc.so.2 "$out/lib/libtensorflow.so"
    ln -s libtensorflow_framework.so.2 "$out/lib/libtensorflow_framework.so"

    mkdir -p "$dev/include/tensorflow" "$dev/lib/pkgconfig"
    cp -r tensorflow/include/tensorflow/c "$dev/include/tensorflow/c"
    # What tensorflow-sys (`pkg-config tensorflow`) and worker/build.rs (`--variable=libdir`) read.
    cat > "$dev/lib/pkgconfig/tensorflow.pc" <<EOF
    prefix=$out
    libdir=$out/lib
    includedir=$dev/include

    Name: tensorflow
    Description: TensorFlow C API (from the ${wheel.pname} ${pin.version} wheel)
    Version: ${pin.version}
    Libs: -L\''${libdir} -ltensorflow -ltensorflow_framework
    Cflags: -I\''${includedir}
    EOF
    runHook postInstall
  '';

  postFixup = ''
    for library in "$out/lib/libtensorflow_cc.so.2" "$out/lib/libtensorflow_framework.so.2"; do
      patchelf --set-rpath ${lib.escapeShellArg runpath} "$library"
    done
  '';

  passthru = {
    inherit wheel runpath cudaLibraries;
  };

  meta = {
    description = "TensorFlow C API ${pin.version} from the ${wheel.pname} wheel";
    homepage = "https://www.tensorflow.org/";
    license = lib.licenses.asl20;
    sourceProvenance = [ lib.sourceTypes.binaryNativeCode ];
    platforms = [ "x86_64-linux" ];
  };
}
