# alex's home, on every host alex is listed on.
{ pkgs, ... }:
{
  imports = [ ./common.nix ];

  programs.git.settings.user = {
    name = "Alex";
    email = "alex@example.org";
  };
  home.packages = with pkgs; [ rustup nodejs python3 ];
}
