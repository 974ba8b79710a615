DROP TABLE IF EXISTS last_resort_coin;
