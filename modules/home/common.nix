# What every user's home has: a shell, git, an editor, direnv for the dev shells.
{ pkgs, ... }:
{
  home.stateVersion = "25.05";

  programs.zsh = {
    enable = true;
    autosuggestion.enable = true;
    history.size = 50000;
  };
  programs.direnv = {
    enable = true;
    nix-direnv.enable = true;
  };
  programs.git.enable = true;
  programs.neovim = {
    enable = true;
    defaultEditor = true;
  };

  home.packages = with pkgs; [ fd htop tree ];
}
