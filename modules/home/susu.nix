# susu's home, on NIXY, NIXI and NIXY2.
{ pkgs, ... }:
{
  imports = [ ./common.nix ];

  programs.git.settings.user = {
    name = "Susu";
    email = "susu@example.org";
  };
  home.packages = with pkgs; [ python3 ];
}
