# The source crane builds from: what cleanCargoSource keeps (Cargo.toml/lock, .cargo/config.toml,
# *.rs, *.toml) plus what the build and the tests read besides: the .proto files (proto/build.rs,
# host/serve/build.rs, scan/build.rs), host/lib/src/dlopen.json and scan/src/ops.tsv (include_str!) and the fixture
# SavedModels under checks/fixtures.
{ lib, craneLib }:
lib.fileset.toSource {
  root = ../.;
  fileset = lib.fileset.unions [
    (craneLib.fileset.commonCargoSources ../.)
    (lib.fileset.fileFilter (file: file.hasExt "proto") ../proto)
    (lib.fileset.fileFilter (file: file.hasExt "proto") ../host/serve)
    (lib.fileset.fileFilter (file: file.hasExt "proto") ../scan)
    ../scan/src/ops.tsv
    ../host/lib/src/dlopen.json
    ../checks/fixtures
  ];
}
