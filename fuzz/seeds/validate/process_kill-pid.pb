
’!Â
TERMZ"
teamstorage