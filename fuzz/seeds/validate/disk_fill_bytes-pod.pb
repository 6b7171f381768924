
2"0
$6f1b5c2e-0d3a-4a8e-9a55-2f0c9a1b7e113f2a9c1b
Š
/€€@Z"
teamstorage