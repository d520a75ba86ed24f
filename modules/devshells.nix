# Development shells for the languages the users work in: `nix develop .#rust` (or direnv with `use flake`).
{ pkgs, cairn }:
{
  default = pkgs.mkShell {
    packages = (with pkgs; [ nixpkgs-fmt sops age ssh-to-age git ]) ++ [ cairn ];
  };
  rust = pkgs.mkShell {
    packages = with pkgs; [ cargo rustc clippy rustfmt rust-analyzer ];
  };
  python = pkgs.mkShell {
    packages = with pkgs; [ python3 uv ruff ];
  };
  node = pkgs.mkShell {
    packages = with pkgs; [ nodejs pnpm ];
  };
}
